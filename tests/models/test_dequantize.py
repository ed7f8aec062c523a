"""Our torch dequantizers (Q8_0, Q5_0) are bit-exact with `gguf.quants`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from jongleur.models.gguf_file import _TORCH_DEQUANT


@pytest.mark.parametrize("qtype", sorted(_TORCH_DEQUANT, key=lambda q: q.name))
def test_torch_dequant_matches_gguf(qtype: GGMLQuantizationType):
    block, type_size = GGML_QUANT_SIZES[qtype]
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=(2048, type_size), dtype=np.uint8)
    scales = rng.normal(0, 0.05, size=2048).astype(np.float16)
    raw[:, :2] = scales.view(np.uint8).reshape(-1, 2)
    expected = dequantize(raw, qtype).reshape(-1)
    ours = _TORCH_DEQUANT[qtype](torch.from_numpy(raw.reshape(-1))).reshape(-1).numpy()
    assert ours.shape == (2048 * block,)
    assert np.array_equal(ours, expected)
