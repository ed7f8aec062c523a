"""Fused per-layer CPU ops of the `int8` dtype (`kernels/fused_ops.c`): RMSNorm with the residual
add, in-place RoPE over the fused QKV rows, and the gated activation.

Each replaces a chain of PyTorch ops whose dispatch, not arithmetic, dominated a one-row decode.
They take float32 CPU tensors whose last dimension is contiguous; rows may be strided (views of the
fused QKV or gate/up outputs), which is how the callers avoid copies.
"""

from __future__ import annotations

import torch

from jongleur.models.cpu_kernels import load_kernels

ACTIVATION_CODES = {"silu": 0, "gelu_pytorch_tanh": 1, "gelu_tanh": 1}


def _check(t: torch.Tensor, name: str) -> None:
    if t.dtype != torch.float32 or t.device.type != "cpu" or t.dim() != 2 or t.stride(1) != 1:
        raise ValueError(f"{name}: fused CPU ops need a float32 CPU [rows, dim] tensor with contiguous rows, "
                         f"got {t.dtype} {tuple(t.shape)} strides {t.stride()} on {t.device}")


def rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float, unit_offset: bool,
            add: torch.Tensor | None = None) -> torch.Tensor:
    """`RMSNorm` of x [T, D]; with `add`, x += add first, in place, and the sum is normed."""
    _check(x, "rmsnorm x")
    if add is not None:
        _check(add, "rmsnorm add")
    t, d = x.shape
    out = torch.empty(t, d, dtype=torch.float32)
    load_kernels().rmsnorm(
        x.data_ptr(), x.stride(0), add.data_ptr() if add is not None else None, add.stride(0) if add is not None else 0,
        weight.data_ptr(), out.data_ptr(), d, t, d, eps, int(unit_offset), torch.get_num_threads(),
    )
    return out


def rope_(x: torch.Tensor, heads: int, head_dim: int, cos: torch.Tensor, sin: torch.Tensor) -> None:
    """Rotate, in place, the first `heads` heads of every row of x [T, >= heads * head_dim]."""
    _check(x, "rope x")
    if cos.shape != (x.shape[0], head_dim) or not (cos.is_contiguous() and sin.is_contiguous()):
        raise ValueError(f"rope: cos/sin must be contiguous [{x.shape[0]}, {head_dim}], got {tuple(cos.shape)}")
    load_kernels().rope_neox(
        x.data_ptr(), x.stride(0), x.shape[0], heads, head_dim, cos.data_ptr(), sin.data_ptr(), torch.get_num_threads()
    )


def gated_activation(gate_up: torch.Tensor, intermediate: int, activation: str) -> torch.Tensor:
    """act(gate_up[:, :I]) * gate_up[:, I:] -> [T, I]."""
    _check(gate_up, "gated activation input")
    t = gate_up.shape[0]
    out = torch.empty(t, intermediate, dtype=torch.float32)
    load_kernels().gated_activation(
        gate_up.data_ptr(), gate_up.stride(0), t, intermediate, out.data_ptr(), intermediate,
        ACTIVATION_CODES[activation], torch.get_num_threads(),
    )
    return out
