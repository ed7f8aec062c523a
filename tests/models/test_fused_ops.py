"""The fused C ops of the int8 dtype against the PyTorch code they replace."""

from __future__ import annotations

import pytest
import torch

from jongleur.models import fused
from jongleur.models.cpu_kernels import kernels_available
from jongleur.models.layers import ACTIVATIONS, RMSNorm, RotaryEmbedding, apply_rope, rope_inverse_frequencies

pytestmark = pytest.mark.skipif(not kernels_available(), reason="the CPU kernels need AVX2+FMA and a C compiler")


@pytest.mark.parametrize("unit_offset", [False, True])
@pytest.mark.parametrize("rows", [1, 5, 300])  # 300 x 200 runs across threads
def test_rmsnorm_with_and_without_the_residual_add(unit_offset, rows):
    torch.manual_seed(rows)
    norm = RMSNorm(200, 1e-6, unit_offset)
    with torch.no_grad():
        norm.weight.normal_()
    x, h = torch.randn(rows, 200) * 3, torch.randn(rows, 200)
    torch.testing.assert_close(fused.rmsnorm(x.clone(), norm.weight, 1e-6, unit_offset), norm(x))
    x2 = x.clone()
    out = fused.rmsnorm(x2, norm.weight, 1e-6, unit_offset, add=h)
    torch.testing.assert_close(x2, x + h)  # the residual stream, updated in place
    torch.testing.assert_close(out, norm(x + h))


def test_rope_rotates_q_and_k_heads_of_fused_rows_in_place():
    torch.manual_seed(0)
    rotary = RotaryEmbedding(rope_inverse_frequencies(16, 10000.0, None))
    cos, sin = rotary.cos_sin(torch.tensor([0, 7, 300]), torch.float32)
    qkv = torch.randn(3, (4 + 2 + 2) * 16)  # 4 q heads, 2 k heads, 2 v heads per row
    expected = qkv.clone()
    expected[:, :96] = apply_rope(qkv[:, :96].view(3, 6, 16), cos, sin).reshape(3, 96)
    fused.rope_(qkv, 6, 16, cos, sin)
    torch.testing.assert_close(qkv, expected)  # v untouched, q and k rotated


@pytest.mark.parametrize("activation", ["silu", "gelu_pytorch_tanh"])
def test_gated_activation(activation):
    torch.manual_seed(1)
    gate_up = torch.randn(3, 2 * 44) * 4  # 44: a vector body and a scalar tail
    expected = ACTIVATIONS[activation](gate_up[:, :44]) * gate_up[:, 44:]
    torch.testing.assert_close(fused.gated_activation(gate_up, 44, activation), expected, rtol=1e-5, atol=1e-5)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="float32 CPU"):
        fused.rmsnorm(torch.randn(2, 8, dtype=torch.float64), torch.ones(8), 1e-6, False)
    with pytest.raises(ValueError, match="cos/sin"):
        fused.rope_(torch.randn(2, 32), 2, 16, torch.ones(3, 16), torch.ones(3, 16))
