"""Q5_0 weights kept from a GGUF: recovered bit for bit from their dequantized values, and the
kernel against a dense matmul over the same weights and the same int8 activations (one scale per
block of 32, llama.cpp's Q8_0 rounding)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType
from tiny_model import gguf_round_trip, int8_blocks

from jongleur.models.cpu_kernels import kernels_available
from jongleur.models.q5 import Q5Weight, q5_linear, quantize_exact
from jongleur.models.q8 import Q8Weight
from jongleur.models.quantize import quantize_weight

pytestmark = pytest.mark.skipif(not kernels_available(), reason="the CPU kernels need AVX2+FMA and a C compiler")


def test_a_q5_0_gguf_tensor_is_recovered_exactly():
    torch.manual_seed(0)
    w = gguf_round_trip(torch.randn(37, 256) * torch.logspace(-4, 1, 256))  # blocks of very different sizes
    w[3, :64] = 0.0  # an all-zero block
    q = quantize_exact(w)
    assert isinstance(q, Q5Weight) and q.nbytes == 48 * 256 // 32 * 24  # columns padded to panels of 16
    assert torch.equal(q.dequantize(), w)


def test_other_tensors_are_not_taken_as_q5_and_stay_int8():
    torch.manual_seed(1)
    dense = torch.randn(8, 64)
    assert quantize_exact(dense) is None
    assert isinstance(quantize_weight(dense), Q8Weight)
    q8_0 = gguf_round_trip(dense, GGMLQuantizationType.Q8_0)  # int8 blocks reproduce a Q8_0 tensor exactly
    assert isinstance(quantize_weight(q8_0), Q8Weight)
    assert torch.equal(quantize_weight(q8_0).dequantize(), q8_0)
    assert quantize_exact(torch.randn(4, 48)) is None  # K not a multiple of 32


@pytest.mark.parametrize("m", [1, 2, 3, 6, 17])
@pytest.mark.parametrize("n", [1, 3, 4, 5, 130])
def test_kernel_matches_dense_matmul(m, n):
    torch.manual_seed(m * 1000 + n)
    w = gguf_round_trip(torch.randn(n, 160))
    q = quantize_exact(w)
    assert q is not None
    x, bias = torch.randn(m, 160), torch.randn(n)
    x[0, 32:64] *= 1000.0  # a block of outliers: its scale must not touch the other blocks
    # the products are exact integers; only the fp32 sums' order differs from the reference
    tol = {"rtol": 1e-5, "atol": 1e-3}
    torch.testing.assert_close(q5_linear(x, q), F.linear(int8_blocks(x), w), **tol)
    torch.testing.assert_close(q5_linear(x, q, bias), F.linear(int8_blocks(x), w, bias), **tol)
    # and near the fp32 product: int8 activations cost ~0.3% of a block's largest value
    plain = torch.randn(m, 160)
    assert (q5_linear(plain, q) - F.linear(plain, w)).abs().max() < 0.02 * F.linear(plain, w).abs().max()


def test_extreme_blocks_do_not_overflow_the_int16_sums():
    """Weights at -16 and 15 against activations at +-127: an int16 lane reaches 16 * 16 * 127 = 32512."""
    alternating = torch.full((16, 64), -16.0)
    alternating[:, 1::2] = 15.0
    for w in (torch.full((16, 64), -16.0), alternating):
        q = quantize_exact(w)
        assert q is not None
        for x in (torch.full((3, 64), -1.0), torch.full((3, 64), 1.0), torch.sign(w[:3]) * -1.0):
            torch.testing.assert_close(q5_linear(x, q), F.linear(x, w), rtol=0, atol=1e-3)


def test_strided_and_batched_inputs():
    torch.manual_seed(2)
    w = gguf_round_trip(torch.randn(12, 64))
    q = quantize_exact(w)
    wide = torch.randn(5, 128)
    expected = F.linear(int8_blocks(wide[:, :64]), w)
    torch.testing.assert_close(q5_linear(wide[:, :64], q), expected, rtol=1e-5, atol=1e-3)
    assert q5_linear(torch.randn(2, 3, 64), q).shape == (2, 3, 12)
    assert q5_linear(torch.empty(0, 64), q).shape == (0, 12)
    with pytest.raises(ValueError, match="float32 CPU input"):
        q5_linear(torch.randn(2, 64, dtype=torch.bfloat16), q)
