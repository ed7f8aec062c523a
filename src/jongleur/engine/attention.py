"""Paged attention in plain PyTorch (CPU and CUDA).

The KV cache of one layer is a pair of tensors `[num_slots, kv_heads, head_dim]` where
`num_slots = num_blocks * block_size`: slot `b * block_size + i` holds token `i` of block `b`.
A step's tokens are flattened (varlen): `q` is `[T, heads, head_dim]`. `AttentionMetadata`
is built once per step by the runner and shared by every layer:

- `slot_mapping[T]`: where each new token's K/V is written;
- decode sequences (one query token each) are batched in one SDPA call over their gathered,
  padded KV (`decode_kv_slots [D, Lmax]`, masked by `decode_mask`);
- prefill chunks are computed one sequence at a time (their queries are many tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class PrefillSpan:
    """One sequence's chunk of new tokens in the flattened batch."""

    query_start: int  # index of its first new token in the flattened batch
    query_len: int
    kv_slots: torch.Tensor  # [context_len] slots of every token up to and including the new ones
    positions_start: int  # absolute position of its first new token


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [T] long
    prefills: list[PrefillSpan]
    decode_token_index: torch.Tensor  # [D] long: rows of the flattened batch that are decodes
    decode_kv_slots: torch.Tensor  # [D, Lmax] long (padded with slot 0)
    decode_context_lens: torch.Tensor  # [D] long
    decode_positions: torch.Tensor  # [D] long: absolute position of each decode's query token
    # Cached masks per sliding window (None = full attention), built lazily per step.
    _decode_masks: dict[int | None, torch.Tensor] | None = None

    @property
    def num_decodes(self) -> int:
        return int(self.decode_token_index.numel())

    def decode_mask(self, sliding_window: int | None) -> torch.Tensor:
        """[D, 1, 1, Lmax] bool: True where a decode query may attend."""
        if self._decode_masks is None:
            self._decode_masks = {}
        mask = self._decode_masks.get(sliding_window)
        if mask is None:
            lmax = self.decode_kv_slots.shape[1]
            key_pos = torch.arange(lmax, device=self.decode_kv_slots.device)[None, :]
            mask = key_pos < self.decode_context_lens[:, None]
            if sliding_window is not None:
                mask = mask & (key_pos > self.decode_positions[:, None] - sliding_window)
            mask = mask[:, None, None, :]
            self._decode_masks[sliding_window] = mask
        return mask


def prefill_mask(
    query_len: int, context_len: int, sliding_window: int | None, device: torch.device
) -> torch.Tensor:
    """[query_len, context_len] bool causal mask for queries that are the last `query_len` tokens."""
    q_pos = torch.arange(context_len - query_len, context_len, device=device)[:, None]
    k_pos = torch.arange(context_len, device=device)[None, :]
    mask = k_pos <= q_pos
    if sliding_window is not None:
        mask = mask & (k_pos > q_pos - sliding_window)
    return mask


def write_kv(
    k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor
) -> None:
    """Store the step's new keys/values ([T, kv_heads, head_dim]) into their slots."""
    k_cache.index_copy_(0, slot_mapping, k.to(k_cache.dtype))
    v_cache.index_copy_(0, slot_mapping, v.to(v_cache.dtype))


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    sliding_window: int | None = None,
) -> torch.Tensor:
    """Write this step's K/V into the cache, then attend every query to its sequence's context.

    q: [T, H, D]; k, v: [T, KVH, D]; caches: [slots, KVH, D]. Returns [T, H, D].
    """
    write_kv(k_cache, v_cache, k, v, meta.slot_mapping)
    out = torch.empty_like(q)
    num_heads, num_kv_heads = q.shape[1], k.shape[1]
    gqa = num_heads != num_kv_heads
    for span in meta.prefills:
        rows = slice(span.query_start, span.query_start + span.query_len)
        keys = k_cache[span.kv_slots].to(q.dtype)  # [L, KVH, D]
        values = v_cache[span.kv_slots].to(q.dtype)
        mask = prefill_mask(span.query_len, keys.shape[0], sliding_window, q.device)
        attn = F.scaled_dot_product_attention(
            q[rows].transpose(0, 1),  # [H, Q, D]
            keys.transpose(0, 1),  # [KVH, L, D]
            values.transpose(0, 1),
            attn_mask=mask,
            scale=scale,
            enable_gqa=gqa,
        )
        out[rows] = attn.transpose(0, 1)
    if meta.num_decodes:
        idx = meta.decode_token_index
        keys = k_cache[meta.decode_kv_slots].to(q.dtype)  # [D, Lmax, KVH, D]
        values = v_cache[meta.decode_kv_slots].to(q.dtype)
        attn = F.scaled_dot_product_attention(
            q[idx].unsqueeze(2),  # [D, H, 1, hd]
            keys.transpose(1, 2),  # [D, KVH, Lmax, hd]
            values.transpose(1, 2),
            attn_mask=meta.decode_mask(sliding_window),
            scale=scale,
            enable_gqa=gqa,
        )
        out[idx] = attn.squeeze(2)
    return out


def build_kv_slots(block_table: list[int], context_len: int, block_size: int) -> list[int]:
    """Slots of the first `context_len` tokens of a sequence with this block table."""
    return [block_table[i // block_size] * block_size + i % block_size for i in range(context_len)]


def build_attention_metadata(
    spans: list[tuple[list[int], int, int]],
    block_size: int,
    device: torch.device,
) -> AttentionMetadata:
    """Build metadata for one step.

    `spans` lists, in batch order, (block_table, num_computed_tokens, num_new_tokens) per sequence.
    A span with one new token and a non-empty context is batched as a decode.
    """
    slot_mapping: list[int] = []
    prefills: list[PrefillSpan] = []
    dec_rows: list[int] = []
    dec_slots: list[list[int]] = []
    dec_positions: list[int] = []
    row = 0
    for block_table, computed, new in spans:
        context_len = computed + new
        slots = build_kv_slots(block_table, context_len, block_size)
        slot_mapping.extend(slots[computed:])
        if new == 1 and computed > 0:
            dec_rows.append(row)
            dec_slots.append(slots)
            dec_positions.append(computed)
        else:
            prefills.append(
                PrefillSpan(
                    query_start=row,
                    query_len=new,
                    kv_slots=torch.tensor(slots, dtype=torch.long, device=device),
                    positions_start=computed,
                )
            )
        row += new
    lmax = max((len(s) for s in dec_slots), default=0)
    padded = [s + [0] * (lmax - len(s)) for s in dec_slots]
    return AttentionMetadata(
        slot_mapping=torch.tensor(slot_mapping, dtype=torch.long, device=device),
        prefills=prefills,
        decode_token_index=torch.tensor(dec_rows, dtype=torch.long, device=device),
        decode_kv_slots=torch.tensor(padded, dtype=torch.long, device=device).reshape(len(dec_rows), lmax),
        decode_context_lens=torch.tensor([len(s) for s in dec_slots], dtype=torch.long, device=device),
        decode_positions=torch.tensor(dec_positions, dtype=torch.long, device=device),
    )


def allocate_kv_cache(
    num_layers: int, num_slots: int, num_kv_heads: int, head_dim: int, dtype: torch.dtype, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One (k, v) pair of `[num_slots, kv_heads, head_dim]` tensors per layer, preallocated."""
    return [
        (
            torch.zeros(num_slots, num_kv_heads, head_dim, dtype=dtype, device=device),
            torch.zeros(num_slots, num_kv_heads, head_dim, dtype=dtype, device=device),
        )
        for _ in range(num_layers)
    ]
