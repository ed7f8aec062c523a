"""The C paged attention (decodes, and every prefill row as its own query) against SDPA on the same paged cache."""

from __future__ import annotations

import random

import pytest
import torch

from jongleur.engine import attention
from jongleur.engine.attention import build_attention_metadata
from jongleur.models.cpu_kernels import kernels_available

pytestmark = pytest.mark.skipif(not kernels_available(), reason="CPU kernels need AVX2+FMA and a C compiler")


def paged_cache(seed: int, kv_heads: int, head_dim: int, num_blocks: int, block_size: int = 4):
    """Random K/V caches and a shuffled list of free blocks to hand out."""
    torch.manual_seed(seed)
    k_cache = torch.randn(num_blocks * block_size, kv_heads, head_dim)
    v_cache = torch.randn(num_blocks * block_size, kv_heads, head_dim)
    free = list(range(num_blocks))
    random.Random(seed).shuffle(free)
    return k_cache, v_cache, free


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim", "window"), [(14, 2, 64, None), (4, 1, 256, 5), (8, 8, 40, None)])
def test_kernel_matches_sdpa(monkeypatch, heads, kv_heads, head_dim, window):
    block_size = 4
    k_cache, v_cache, free = paged_cache(heads * 100 + head_dim, kv_heads, head_dim, 64, block_size)
    spans = []
    for length in (1, 3, 4, 5, 17, 30):  # tokens already computed; one new token each
        blocks = [free.pop() for _ in range((length + 1 + block_size - 1) // block_size)]
        spans.append((blocks, length, 1))
    meta = build_attention_metadata(spans, block_size, torch.device("cpu"))
    q = torch.randn(len(spans), heads, head_dim)
    scale = head_dim**-0.5
    ours = attention._decode_attention(q, k_cache, v_cache, meta, scale, window)
    monkeypatch.setattr(attention, "kernels_available", lambda: False)
    reference = attention._decode_attention(q, k_cache, v_cache, meta, scale, window)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("heads", "kv_heads", "head_dim", "window"), [(14, 2, 64, None), (4, 1, 256, 5)])
def test_prefill_rows_through_the_kernel_match_sdpa(monkeypatch, heads, kv_heads, head_dim, window):
    """A mixed step (a fresh prompt, a chunk after earlier context, decodes): every row runs through
    the kernel as its own query and must agree with SDPA's causal prefill."""
    block_size = 4
    k_cache, v_cache, free = paged_cache(7, kv_heads, head_dim, 96, block_size)
    spans = []
    for computed, new in ((0, 13), (5, 1), (22, 9), (30, 1), (0, 1)):
        blocks = [free.pop() for _ in range((computed + new + block_size - 1) // block_size)]
        spans.append((blocks, computed, new))
    meta = build_attention_metadata(spans, block_size, torch.device("cpu"))
    assert meta.rows is not None and meta.rows.positions.tolist()[:13] == list(range(13))
    rows = sum(new for _, _, new in spans)
    q, k, v = torch.randn(rows, heads, head_dim), torch.randn(rows, kv_heads, head_dim), torch.randn(rows, kv_heads, head_dim)
    scale = head_dim**-0.5
    ours = attention.paged_attention(q, k, v, k_cache.clone(), v_cache.clone(), meta, scale, window)
    monkeypatch.setattr(attention, "kernels_available", lambda: False)
    reference = attention.paged_attention(q, k, v, k_cache.clone(), v_cache.clone(), meta, scale, window)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)
