"""`ModelRunner`: turns one `SchedulerOutput` into logits.

It owns the preallocated paged KV cache, flattens the step's decodes and prefill chunks into
one batch (every linear layer runs once over all tokens), builds the attention metadata and
computes logits only for the rows that are sampled (and for prompt rows when prompt logprobs
were asked for).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jongleur.engine.attention import allocate_kv_cache, build_attention_metadata
from jongleur.engine.scheduler import ScheduledSequence
from jongleur.models.base import CausalLM


@dataclass
class StepLogits:
    """Logits of one step. `sample_rows[i]` belongs to `sample_seqs[i]`."""

    sample_logits: torch.Tensor  # [S, vocab] float32
    sample_seq_ids: list[int]  # seq_id per row
    prompt_logits: dict[int, torch.Tensor]  # seq_id -> [chunk_len, vocab] for prompt-logprob sequences


class ModelRunner:
    def __init__(
        self,
        model: CausalLM,
        num_blocks: int,
        block_size: int,
        kv_dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.model = model
        self.block_size = block_size
        self.device = device
        # Fuse q/k/v and gate/up weights now rather than on the first step (parameters keep their names).
        for module in getattr(model, "modules", list)():
            fuse = getattr(module, "fuse_projections", None)
            if fuse is not None:
                fuse()
        if device.type == "cuda":
            # cuDNN's SDPA builds a plan per new shape (~1.7 ms of CPU per call, measured on an
            # H200), and decode shapes change every block: flash / mem-efficient / math instead.
            torch.backends.cuda.enable_cudnn_sdp(False)
        spec = model.kv_spec()
        self.kv_caches = allocate_kv_cache(
            spec.num_layers, num_blocks * block_size, spec.num_kv_heads, spec.head_dim, kv_dtype, device
        )

    @torch.inference_mode()
    def execute(self, scheduled: list[ScheduledSequence], want_prompt_logits: set[int]) -> StepLogits:
        input_ids: list[int] = []
        positions: list[int] = []
        spans: list[tuple[list[int], int, int]] = []
        sample_rows: list[int] = []
        sample_seq_ids: list[int] = []
        prompt_rows: dict[int, tuple[int, int]] = {}
        row = 0
        for item in scheduled:
            seq, start, new = item.seq, item.seq.num_computed_tokens, item.num_new_tokens
            input_ids.extend(seq.token_range(start, start + new))
            positions.extend(range(start, start + new))
            spans.append((seq.block_table, start, new))
            if seq.seq_id in want_prompt_logits:
                prompt_rows[seq.seq_id] = (row, row + new)
            row += new
            if start + new == seq.num_tokens:
                sample_rows.append(row - 1)
                sample_seq_ids.append(seq.seq_id)
        meta = build_attention_metadata(spans, self.block_size, self.device)
        hidden = self.model.forward(
            torch.tensor(input_ids, dtype=torch.long, device=self.device),
            torch.tensor(positions, dtype=torch.long, device=self.device),
            self.kv_caches,
            meta,
        )
        index = torch.tensor(sample_rows, dtype=torch.long, device=self.device)
        sample_logits = self.model.compute_logits(hidden.index_select(0, index)).float()
        prompt_logits = {
            seq_id: self.model.compute_logits(hidden[a:b]).float() for seq_id, (a, b) in prompt_rows.items()
        }
        return StepLogits(sample_logits, sample_seq_ids, prompt_logits)
