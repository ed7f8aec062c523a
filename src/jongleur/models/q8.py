"""Int8 linears for CPUs: the engine's `int8` dtype.

On CPUs without native bf16 (AVX2 + FMA only) a decode step is bound by reading fp32 weights
(4 bytes each). Here weights are stored like GGUF's Q8_0: int8 with one fp32 scale per 32
weights along the input dimension (1.125 bytes per weight), in panels of 16 output columns. The
activations stay fp32 between layers; each linear quantizes its input rows to int16 (one scale per
row, an error far below the weights' rounding) so that the products run on the integer units. The
matmul is C (`kernels/q8_linear.c`, built and loaded by `cpu_kernels`); where it cannot be built,
`auto` keeps fp32 and an explicit `int8` fails with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from jongleur.models.cpu_kernels import load_kernels

BLOCK = 32
PANEL = 16  # output columns per panel (kernels/common.h)


def panels(n: int) -> int:
    return (n + PANEL - 1) // PANEL


@dataclass
class Q8Weight:
    """A `[out_features, in_features]` weight as int8 blocks of 32 with fp32 scales, in the kernels'
    panel order (16 columns, k-pair major; columns padded to a multiple of 16)."""

    qweight: torch.Tensor  # [N / 16, K * 16] int8
    scales: torch.Tensor  # [N / 16, K // 32 * 16] float32
    out_features: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.out_features, self.qweight.shape[1] // PANEL)

    @property
    def nbytes(self) -> int:
        return self.qweight.numel() + self.scales.numel() * 4

    def dequantize(self) -> torch.Tensor:
        n, k = self.shape
        out = torch.empty(n, k, dtype=torch.float32)
        load_kernels().q8_dequantize(self.qweight.data_ptr(), self.scales.data_ptr(), n, k, out.data_ptr())
        return out


def quantize(weight: torch.Tensor) -> Q8Weight:
    """fp32/bf16 `[N, K]` (K a multiple of 32) -> `Q8Weight` (round to nearest, absmax / 127 per block)."""
    if weight.dim() != 2 or weight.shape[1] % BLOCK:
        raise ValueError(f"int8 weights need [N, K] with K a multiple of {BLOCK}, got {tuple(weight.shape)}")
    lib = load_kernels()
    w = weight.detach().to(device="cpu", dtype=torch.float32).contiguous()
    n, k = w.shape
    qweight = torch.zeros(panels(n), k * PANEL, dtype=torch.int8)
    scales = torch.zeros(panels(n), k // BLOCK * PANEL, dtype=torch.float32)
    lib.q8_quantize(w.data_ptr(), n, k, qweight.data_ptr(), scales.data_ptr())
    return Q8Weight(qweight, scales, n)


def q8_linear(x: torch.Tensor, weight: Q8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight.dequantize(), bias)` without materializing the weight. x: [..., K] float32."""
    x2, y, bias = linear_operands(x, weight.shape, bias)
    if x2.shape[0]:
        load_kernels().q8_linear(
            x2.data_ptr(), x2.shape[0], x2.shape[1], x2.stride(0), weight.qweight.data_ptr(), weight.scales.data_ptr(),
            y.shape[1], bias.data_ptr() if bias is not None else None, y.data_ptr(), y.shape[1], torch.get_num_threads(),
        )
    return y.view(*x.shape[:-1], y.shape[1])


def linear_operands(
    x: torch.Tensor, shape: tuple[int, int], bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """What the C weight kernels take: x as [M, K] rows with unit stride, a new fp32 y [M, N], fp32 bias."""
    n, k = shape
    if x.shape[-1] != k or x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError(f"quantized linears need float32 CPU input [..., {k}], got {x.dtype} {tuple(x.shape)} on {x.device}")
    x2 = x.reshape(-1, k)
    if x2.stride(1) != 1:
        x2 = x2.contiguous()
    if bias is not None and (bias.dtype != torch.float32 or not bias.is_contiguous()):
        bias = bias.detach().to(torch.float32).contiguous()
    return x2, torch.empty(x2.shape[0], n, dtype=torch.float32), bias
