"""5-bit weights in GGUF's Q5_0 scheme, kept as the file has them (`kernels/q5_linear.c`).

A GGUF tensor stored as Q5_0 arrives here dequantized to fp32 (the loader and the weight cache
work in dense tensors). `quantize_exact` re-derives its blocks with llama.cpp's own rounding and
keeps them only if they reproduce every value bit for bit, which they do for a tensor that came from
Q5_0 and almost never do otherwise. Such a tensor then costs 0.625 bytes a weight (plus its
scales) per decode step instead of int8's 1, with no rounding added; every other tensor stays int8
(`q8`). Its activations run as int8 blocks of 32, as llama.cpp runs them against Q5_0 (see the
kernel): twice the multiply-adds per instruction of the int16 path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jongleur.models.cpu_kernels import load_kernels
from jongleur.models.q8 import BLOCK, PANEL, linear_operands, panels

GROUP_BYTES = 20  # 32 weights of a panel: 32 fifth bits, 32 nibbles (scales apart, fp32)


@dataclass
class Q5Weight:
    """A `[out_features, in_features]` weight as Q5_0 blocks of 32, in the kernels' panel order
    (16 columns; 20 bytes of bits per 32 weights plus an fp32 scale per column and block)."""

    groups: torch.Tensor  # [N / 16, K // 32 * 16 * 20] uint8
    scales: torch.Tensor  # [N / 16, K // 32 * 16] float32
    out_features: int
    in_features: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.in_features)

    @property
    def nbytes(self) -> int:
        return self.groups.numel() + self.scales.numel() * 4

    def dequantize(self) -> torch.Tensor:
        n, k = self.shape
        out = torch.empty(n, k, dtype=torch.float32)
        load_kernels().q5_dequantize(self.groups.data_ptr(), self.scales.data_ptr(), n, k, out.data_ptr())
        return out


def quantize_exact(weight: torch.Tensor) -> Q5Weight | None:
    """`weight` [N, K] as Q5_0 blocks if they reproduce it exactly (a tensor from a Q5_0 GGUF), else None."""
    if weight.dim() != 2 or weight.shape[1] % BLOCK or not weight.dtype.is_floating_point:
        return None
    w = weight.detach().to(device="cpu", dtype=torch.float32).contiguous()
    n, k = w.shape
    groups = torch.zeros(panels(n), k // BLOCK * PANEL * GROUP_BYTES, dtype=torch.uint8)
    scales = torch.zeros(panels(n), k // BLOCK * PANEL, dtype=torch.float32)
    inexact = load_kernels().q5_quantize(w.data_ptr(), n, k, groups.data_ptr(), scales.data_ptr())
    return Q5Weight(groups, scales, n, k) if inexact == 0 else None


def q5_linear(x: torch.Tensor, weight: Q5Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight.dequantize(), bias)` without materializing the weight. x: [..., K] float32."""
    x2, y, bias = linear_operands(x, weight.shape, bias)
    if x2.shape[0]:
        load_kernels().q5_linear(
            x2.data_ptr(), x2.shape[0], x2.shape[1], x2.stride(0), weight.groups.data_ptr(), weight.scales.data_ptr(),
            y.shape[1], bias.data_ptr() if bias is not None else None, y.data_ptr(), y.shape[1], torch.get_num_threads(),
        )
    return y.view(*x.shape[:-1], y.shape[1])
