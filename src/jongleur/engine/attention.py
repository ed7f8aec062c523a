"""Paged attention in plain PyTorch (CPU and CUDA).

The KV cache of one layer is a pair of tensors `[num_slots, kv_heads, head_dim]` where
`num_slots = num_blocks * block_size`: slot `b * block_size + i` holds token `i` of block `b`.
A step's tokens are flattened (varlen): `q` is `[T, heads, head_dim]`. `AttentionMetadata`
is built once per step by the runner (tensor ops, no per-token Python loops) and shared by
every layer:

- `slot_mapping[T]`: where each new token's K/V is written;
- decode sequences (one query token each) are batched: their KV is gathered a whole block at a
  time (one `index_select` per layer on the cache viewed as `[blocks, block_size, ...]`) into a
  padded `[D, Lmax]` context, and attended by one SDPA call with a bool mask built once per step
  (measured faster here than matmul-softmax-matmul, which pays for permuted copies);
- on CPU with jongleur's kernels, every row of the step (decode or prefill) goes through the paged
  kernel as a query of its own with its own context length (`AttentionMetadata.rows`): a token's
  attention is then the same bits whichever way it is scheduled (alone, in a batch, in a prefill
  chunk, after a prefix-cache hit). Int8 activations round every linear's input, so a difference
  in the last bit upstream can tip a rounding and move a logprob by ~0.02: seeded sampling stays
  reproducible only if nothing upstream depends on the batch. The kernel reads each row's context
  (quadratic in a chunk's length, as SDPA's work is): a 474-token prefill step spends about what
  SDPA did;
- elsewhere, prefill chunks are computed one sequence at a time (their queries are many tokens) with SDPA,
  on 4-D inputs (a batch of one): torch 2.13's CPU SDPA takes its fused flash kernel only for 4-D
  and falls back to the math path for 3-D (237-token causal chunk: 3.2 vs 9.7 ms);
  a chunk with no earlier context attends to its own fresh K/V directly (no gather, causal).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from jongleur.models.cpu_kernels import kernels_available, load_kernels


@dataclass
class PrefillSpan:
    """One sequence's chunk of new tokens in the flattened batch."""

    query_start: int  # index of its first new token in the flattened batch
    query_len: int
    kv_slots: torch.Tensor  # [context_len] slots of every token up to and including the new ones
    positions_start: int  # absolute position of its first new token


@dataclass
class RowContexts:
    """Each row of a step as one query: its sequence's block table, context length and position."""

    block_tables: torch.Tensor  # [T, max_blocks] long (padded with block 0)
    context_lens: torch.Tensor  # [T] long
    positions: torch.Tensor  # [T] long


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [T] long
    prefills: list[PrefillSpan]
    decode_token_index: torch.Tensor  # [D] long: rows of the flattened batch that are decodes
    decode_block_tables: torch.Tensor  # [D, max_blocks] long (padded with block 0)
    decode_context_lens: torch.Tensor  # [D] long
    decode_positions: torch.Tensor  # [D] long: absolute position of each decode's query token
    block_size: int = 16
    # rows of the decodes as a slice when they are contiguous in the batch (the usual case)
    decode_rows: slice | None = None
    # every row of the step as its own query (the CPU kernel's view): [T, max_blocks], [T], [T]
    rows: RowContexts | None = None
    # Cached additive masks per (sliding window, dtype), built lazily once per step.
    _decode_masks: dict = field(default_factory=dict)

    @property
    def num_decodes(self) -> int:
        return int(self.decode_token_index.numel())

    @property
    def decode_kv_slots(self) -> torch.Tensor:
        """[D, Lmax] long: the slot of every (padded) context position of each decode."""
        bs = self.block_size
        offsets = torch.arange(bs, device=self.decode_block_tables.device)
        return (self.decode_block_tables[:, :, None] * bs + offsets).flatten(1)

    def decode_mask(self, sliding_window: int | None) -> torch.Tensor:
        """[D, 1, 1, Lmax] bool: True where a decode query may attend."""
        key = (sliding_window, torch.bool)
        mask = self._decode_masks.get(key)
        if mask is None:
            lmax = self.decode_block_tables.shape[1] * self.block_size
            key_pos = torch.arange(lmax, device=self.decode_block_tables.device)[None, :]
            mask = key_pos < self.decode_context_lens[:, None]
            if sliding_window is not None:
                mask = mask & (key_pos > self.decode_positions[:, None] - sliding_window)
            mask = mask[:, None, None, :]
            self._decode_masks[key] = mask
        return mask

    def decode_bias(self, sliding_window: int | None, dtype: torch.dtype) -> torch.Tensor:
        """[D, 1, 1, Lmax] additive mask: 0 where a decode query may attend, -inf elsewhere."""
        key = (sliding_window, dtype)
        bias = self._decode_masks.get(key)
        if bias is None:
            allowed = self.decode_mask(sliding_window)
            bias = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
            bias.masked_fill_(~allowed, float("-inf"))
            self._decode_masks[key] = bias
        return bias


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
    k_cache.index_copy_(0, slot_mapping, k if k.dtype == k_cache.dtype else k.to(k_cache.dtype))
    v_cache.index_copy_(0, slot_mapping, v if v.dtype == v_cache.dtype else v.to(v_cache.dtype))


def _as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def _decode_attention(
    q: torch.Tensor,  # [D, H, hd]
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    meta: AttentionMetadata,
    scale: float,
    sliding_window: int | None,
) -> torch.Tensor:  # [D, H, hd]
    d, num_heads, head_dim = q.shape
    num_kv_heads = k_cache.shape[1]
    if _uses_cpu_kernel(q, k_cache):
        return _decode_attention_cpu_kernel(q, k_cache, v_cache, meta, scale, sliding_window)
    bs = meta.block_size
    blocks = meta.decode_block_tables
    lmax = blocks.shape[1] * bs
    flat = blocks.reshape(-1)
    # One gather per cache, whole blocks at a time: [D * max_blocks, bs, KVH, hd] -> [D, Lmax, KVH, hd]
    keys = k_cache.view(-1, bs, num_kv_heads, head_dim).index_select(0, flat).view(d, lmax, num_kv_heads, head_dim)
    values = v_cache.view(-1, bs, num_kv_heads, head_dim).index_select(0, flat).view(d, lmax, num_kv_heads, head_dim)
    keys, values = _as(keys, q.dtype), _as(values, q.dtype)
    # SDPA over the strided [D, KVH, Lmax, hd] views with a bool mask measured fastest on CPU
    # (matmul-softmax-matmul pays for permuted copies; an additive float mask is slower).
    out = F.scaled_dot_product_attention(
        q.unsqueeze(2),  # [D, H, 1, hd]
        keys.transpose(1, 2),
        values.transpose(1, 2),
        attn_mask=meta.decode_mask(sliding_window),
        scale=scale,
        enable_gqa=num_heads != num_kv_heads,
    )
    return out.squeeze(2).reshape(d, num_heads, head_dim)


def _decode_attention_cpu_kernel(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, meta: AttentionMetadata, scale: float,
    sliding_window: int | None,
) -> torch.Tensor:
    """The same attention in C (`models/kernels/paged_attention.c`): keys and values read in place
    through the block table, one task per (sequence, KV head). At 16 sequences it measured several
    times faster than the gather + SDPA path, whose cost was the copies and the mask."""
    return _rows_attention_cpu_kernel(
        q, k_cache, v_cache, RowContexts(meta.decode_block_tables, meta.decode_context_lens, meta.decode_positions),
        meta.block_size, scale, sliding_window,
    )


def _uses_cpu_kernel(q: torch.Tensor, k_cache: torch.Tensor) -> bool:
    return q.device.type == "cpu" and q.dtype == k_cache.dtype == torch.float32 and kernels_available()


def _rows_attention_cpu_kernel(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, rows: RowContexts, block_size: int, scale: float,
    sliding_window: int | None,
) -> torch.Tensor:
    """q [R, H, hd], one query per row, each against its own context (`rows`)."""
    d, num_heads, head_dim = q.shape
    q = q.contiguous()
    out = torch.empty_like(q)
    tables = rows.block_tables.contiguous()
    lens, positions = rows.context_lens.contiguous(), rows.positions.contiguous()
    load_kernels().paged_decode_attention(
        q.data_ptr(), k_cache.data_ptr(), v_cache.data_ptr(), tables.data_ptr(), tables.shape[1], lens.data_ptr(),
        positions.data_ptr(), d, num_heads, k_cache.shape[1], head_dim, block_size, scale,
        sliding_window or 0, out.data_ptr(), torch.get_num_threads(),
    )
    return out


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
    if meta.rows is not None and _uses_cpu_kernel(q, k_cache):  # rows: a step with prefills, on CPU
        return _rows_attention_cpu_kernel(q, k_cache, v_cache, meta.rows, meta.block_size, scale, sliding_window)
    num_heads, num_kv_heads = q.shape[1], k.shape[1]
    gqa = num_heads != num_kv_heads
    if not meta.prefills and meta.decode_rows is not None and meta.decode_rows == slice(0, q.shape[0]):
        return _decode_attention(q, k_cache, v_cache, meta, scale, sliding_window)  # pure decode step
    out = torch.empty_like(q)
    for span in meta.prefills:
        rows = slice(span.query_start, span.query_start + span.query_len)
        context_len = span.kv_slots.shape[0]
        if context_len == span.query_len and (sliding_window is None or sliding_window >= context_len):
            # No earlier context: attend to the fresh K/V, plain causal.
            attn = F.scaled_dot_product_attention(
                q[rows].transpose(0, 1)[None], k[rows].transpose(0, 1)[None], v[rows].transpose(0, 1)[None],
                is_causal=True, scale=scale, enable_gqa=gqa,
            )[0]
        else:
            keys = _as(k_cache.index_select(0, span.kv_slots), q.dtype)  # [L, KVH, D]
            values = _as(v_cache.index_select(0, span.kv_slots), q.dtype)
            mask = prefill_mask(span.query_len, context_len, sliding_window, q.device)
            attn = F.scaled_dot_product_attention(
                q[rows].transpose(0, 1)[None],  # [1, H, Q, D]
                keys.transpose(0, 1)[None],  # [1, KVH, L, D]
                values.transpose(0, 1)[None],
                attn_mask=mask,
                scale=scale,
                enable_gqa=gqa,
            )[0]
        out[rows] = attn.transpose(0, 1)
    if meta.num_decodes:
        if meta.decode_rows is not None:
            out[meta.decode_rows] = _decode_attention(q[meta.decode_rows], k_cache, v_cache, meta, scale, sliding_window)
        else:
            idx = meta.decode_token_index
            out[idx] = _decode_attention(q.index_select(0, idx), k_cache, v_cache, meta, scale, sliding_window)
    return out


def build_kv_slots(block_table: list[int], context_len: int, block_size: int) -> list[int]:
    """Slots of the first `context_len` tokens of a sequence with this block table."""
    return [block_table[i // block_size] * block_size + i % block_size for i in range(context_len)]


def _slots(table: torch.Tensor, start: int, end: int, block_size: int) -> torch.Tensor:
    """Slots of positions start..end-1 of a sequence whose block table is `table` (a 1-D tensor)."""
    pos = torch.arange(start, end, dtype=torch.long)
    return table[pos // block_size] * block_size + pos % block_size


def build_attention_metadata(
    spans: list[tuple[list[int], int, int]],
    block_size: int,
    device: torch.device,
) -> AttentionMetadata:
    """Build metadata for one step.

    `spans` lists, in batch order, (block_table, num_computed_tokens, num_new_tokens) per sequence.
    A span with one new token and a non-empty context is batched as a decode.
    """
    prefills: list[PrefillSpan] = []
    span_tables: list[list[int]] = []
    dec_rows: list[int] = []
    dec_tables: list[list[int]] = []
    dec_positions: list[int] = []
    slot_parts: list[torch.Tensor] = []
    row = 0
    for block_table, computed, new in spans:
        context_len = computed + new
        table = block_table[: -(-context_len // block_size)]  # the blocks its context fills
        span_tables.append(table)
        if new == 1 and computed > 0:
            dec_rows.append(row)
            dec_tables.append(table)
            dec_positions.append(computed)
        else:
            slots = _slots(torch.tensor(table, dtype=torch.long), 0, context_len, block_size)
            slot_parts.append(slots[computed:])
            prefills.append(
                PrefillSpan(
                    query_start=row, query_len=new, kv_slots=slots.to(device), positions_start=computed
                )
            )
        row += new
    d = len(dec_rows)
    max_blocks = max((len(t) for t in dec_tables), default=0)
    tables = torch.tensor([t + [0] * (max_blocks - len(t)) for t in dec_tables], dtype=torch.long).reshape(d, max_blocks)
    positions = torch.tensor(dec_positions, dtype=torch.long)
    if d:
        dec_slots = tables[torch.arange(d), positions // block_size] * block_size + positions % block_size
        if not prefills:
            slot_mapping = dec_slots
        else:  # interleave in batch order
            slot_mapping = torch.empty(row, dtype=torch.long)
            slot_mapping[torch.tensor(dec_rows, dtype=torch.long)] = dec_slots
            for span in prefills:
                slot_mapping[span.query_start : span.query_start + span.query_len] = span.kv_slots[-span.query_len :].cpu()
    else:
        slot_mapping = torch.cat(slot_parts) if slot_parts else torch.empty(0, dtype=torch.long)
    contiguous = d > 0 and dec_rows[-1] - dec_rows[0] == d - 1
    return AttentionMetadata(
        slot_mapping=slot_mapping.to(device),
        prefills=prefills,
        decode_token_index=torch.tensor(dec_rows, dtype=torch.long, device=device),
        decode_block_tables=tables.to(device),
        decode_context_lens=(positions + 1).to(device),
        decode_positions=positions.to(device),
        block_size=block_size,
        decode_rows=slice(dec_rows[0], dec_rows[0] + d) if contiguous else None,
        # only the CPU kernel reads them (see paged_attention)
        rows=_row_contexts(spans, span_tables, device) if prefills and device.type == "cpu" else None,
    )


def _row_contexts(spans: list[tuple[list[int], int, int]], tables: list[list[int]], device: torch.device) -> RowContexts:
    """Every row of the step as a query of its own (see the module docstring)."""
    width = max(len(t) for t in tables)
    padded = torch.tensor([t + [0] * (width - len(t)) for t in tables], dtype=torch.long)
    counts = torch.tensor([new for _, _, new in spans], dtype=torch.long)
    positions = torch.cat([torch.arange(computed, computed + new, dtype=torch.long) for _, computed, new in spans])
    return RowContexts(
        block_tables=padded.repeat_interleave(counts, dim=0).to(device),
        context_lens=(positions + 1).to(device),
        positions=positions.to(device),
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
