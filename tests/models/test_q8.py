"""The int8 weight kernel against a dense matmul over the same (dequantized) weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jongleur.models.cpu_kernels import kernels_available
from jongleur.models.q8 import BLOCK, Q8Weight, q8_linear, quantize

pytestmark = pytest.mark.skipif(not kernels_available(), reason="int8 kernel needs AVX2+FMA and a C compiler")


def test_quantize_rounds_each_block_to_absmax_over_127():
    torch.manual_seed(0)
    w = torch.randn(7, 96) * torch.logspace(-3, 1, 96)  # blocks of very different magnitudes
    q = quantize(w)
    assert q.qweight.dtype == torch.int8 and q.shape == (7, 96)
    scales = w.view(7, -1, BLOCK).abs().amax(-1) / 127
    assert int(q.qweight.abs().max()) == 127
    err = (q.dequantize() - w).view(7, -1, BLOCK).abs()
    assert bool((err <= scales[:, :, None] / 2 * 1.0001).all())
    # each block is a multiple of its scale: the scale is absmax / 127
    steps = q.dequantize().view(7, -1, BLOCK) / scales[:, :, None]
    torch.testing.assert_close(steps, steps.round(), rtol=0, atol=1e-4)


def test_zero_blocks_stay_zero():
    w = torch.zeros(4, 64)
    w[1, 40] = 3.0
    q = quantize(w)
    assert q.dequantize().nonzero().tolist() == [[1, 40]]


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5, 16, 33])
@pytest.mark.parametrize("n", [1, 2, 5, 8, 131])
def test_kernel_matches_dense_matmul(m, n):
    torch.manual_seed(m * 1000 + n)
    k = 160
    w = quantize(torch.randn(n, k))
    x = torch.randn(m, k)
    bias = torch.randn(n)
    dense = w.dequantize()
    # activations run as int16 with one scale per row (absmax / 32767): relative error ~1e-5 of the row
    tol = {"rtol": 1e-4, "atol": 2e-3}
    torch.testing.assert_close(q8_linear(x, w), F.linear(x, dense), **tol)
    torch.testing.assert_close(q8_linear(x, w, bias), F.linear(x, dense, bias), **tol)


def test_kernel_takes_strided_rows_and_leading_dims():
    torch.manual_seed(1)
    w = quantize(torch.randn(12, 64))
    wide = torch.randn(6, 100)
    x = wide[:, 10:74]  # rows with a stride of 100
    torch.testing.assert_close(q8_linear(x, w), F.linear(x, w.dequantize()), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(q8_linear(x[:1], w), F.linear(x[:1], w.dequantize()), rtol=1e-4, atol=1e-3)
    x3 = torch.randn(2, 3, 64)
    assert q8_linear(x3, w).shape == (2, 3, 12)
    assert q8_linear(torch.empty(0, 64), w).shape == (0, 12)


def test_bad_shapes_and_dtypes_are_refused():
    w = quantize(torch.randn(4, 64))
    with pytest.raises(ValueError, match="float32"):
        q8_linear(torch.randn(2, 64, dtype=torch.bfloat16), w)
    with pytest.raises(ValueError, match="64"):
        q8_linear(torch.randn(2, 65), w)
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize(torch.randn(4, 48))
    assert isinstance(w, Q8Weight) and w.nbytes == 16 * 64 + 16 * 2 * 4  # one panel of 16 columns
