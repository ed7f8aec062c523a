"""Drive a `CausalLM` through the paged-attention path with explicit step schedules (test helper)."""

from __future__ import annotations

import torch

from jongleur.engine.attention import allocate_kv_cache, build_attention_metadata

BLOCK_SIZE = 4


class PagedRunner:
    """Feeds sequences to a model step by step; records the logits of every fed position."""

    def __init__(self, model, sequences: list[list[int]], num_blocks: int = 64) -> None:
        spec = model.kv_spec()
        self.model = model
        self.sequences = sequences
        dtype = next(model.parameters()).dtype
        self.kv = allocate_kv_cache(
            spec.num_layers, num_blocks * BLOCK_SIZE, spec.num_kv_heads, spec.head_dim, dtype, torch.device("cpu")
        )
        # Interleaved, non-contiguous block tables so paging is really exercised.
        per_seq = num_blocks // len(sequences)
        self.tables = [list(range(num_blocks - 1 - i, -1, -len(sequences)))[:per_seq] for i in range(len(sequences))]
        self.computed = [0] * len(sequences)
        self.logits: list[list[torch.Tensor]] = [[] for _ in sequences]

    @torch.no_grad()
    def step(self, work: list[tuple[int, int]]) -> None:
        """One engine step: `work` lists (sequence index, number of new tokens) in batch order."""
        spans, ids, positions = [], [], []
        for seq, new in work:
            start = self.computed[seq]
            spans.append((self.tables[seq], start, new))
            ids.extend(self.sequences[seq][start : start + new])
            positions.extend(range(start, start + new))
        meta = build_attention_metadata(spans, BLOCK_SIZE, torch.device("cpu"))
        hidden = self.model(torch.tensor(ids), torch.tensor(positions), self.kv, meta)
        logits = self.model.compute_logits(hidden)
        row = 0
        for seq, new in work:
            self.logits[seq].extend(logits[row : row + new])
            self.computed[seq] += new
            row += new

    def result(self, seq: int) -> torch.Tensor:  # [fed tokens, vocab]
        return torch.stack(self.logits[seq])


def run_prefill(model, tokens: list[int]) -> torch.Tensor:
    runner = PagedRunner(model, [tokens])
    runner.step([(0, len(tokens))])
    return runner.result(0)


def run_chunked_then_decode(model, tokens: list[int], chunks: tuple[int, int]) -> torch.Tensor:
    runner = PagedRunner(model, [tokens])
    runner.step([(0, chunks[0])])
    runner.step([(0, chunks[1])])
    for _ in range(len(tokens) - sum(chunks)):
        runner.step([(0, 1)])
    return runner.result(0)


def run_batched(model, a: list[int], b: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Two sequences sharing steps: joint prefill chunks, then mixed decode + prefill, then joint decodes."""
    runner = PagedRunner(model, [a, b])
    runner.step([(0, 5), (1, 3)])
    runner.step([(1, 4), (0, 1)])  # a prefill chunk and a decode in one step
    while runner.computed[0] < len(a) or runner.computed[1] < len(b):
        work = [(i, 1) for i, seq in enumerate((a, b)) if runner.computed[i] < len(seq)]
        runner.step(work)
    return runner.result(0), runner.result(1)
