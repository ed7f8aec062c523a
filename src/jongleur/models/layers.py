"""Building blocks shared by the architectures: RMSNorm, rotary embeddings, gated MLP.

Numerics follow Hugging Face `transformers` (norms in float32, RoPE tables in float32 cast to the
activation dtype) so that fp32 runs match it to rounding. Modules hold no buffers: a model can be
built on the `meta` device and receive its weights with `load_state_dict(assign=True)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from jongleur.models import fused
from jongleur.models.q5 import Q5Weight, q5_linear
from jongleur.models.q8 import Q8Weight, q8_linear

# A dense weight, or the engine's `int8` dtype: int8 blocks, or Q5_0 blocks kept from a GGUF.
Weight = torch.Tensor | Q8Weight | Q5Weight


def linear(x: torch.Tensor, weight: Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(weight, Q8Weight):
        return q8_linear(x, weight, bias)
    if isinstance(weight, Q5Weight):
        return q5_linear(x, weight, bias)
    return F.linear(x, weight, bias)


def release(*linears: nn.Linear) -> None:
    """Drop dense weights that now live as int8 elsewhere (the memory is what int8 is for)."""
    for lin in linears:
        lin.weight = nn.Parameter(torch.empty(0, device=lin.weight.device), requires_grad=False)


class Linear(nn.Linear):
    """`nn.Linear` without random init: weights always come from a file (and init on `meta` is slow)."""

    quantized: Q8Weight | Q5Weight | None = None

    def reset_parameters(self) -> None:
        pass

    def quantize_weights(self, quantize) -> None:
        if self.quantized is None and self.weight.numel():
            self.quantized = quantize(self.weight)
            release(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.quantized if self.quantized is not None else self.weight, self.bias)


class Embedding(nn.Embedding):
    """`nn.Embedding` without random init (see `Linear`)."""

    def reset_parameters(self) -> None:
        pass


class RMSNorm(nn.Module):
    """Llama-style RMSNorm: `weight * normalize(x)`; with `unit_offset`, Gemma's `(1 + weight)`.

    `norm(x, add=h)` first adds h into x in place (the residual stream) and norms the sum.
    """

    cpu_kernels = False  # set by `enable_cpu_kernels` (the int8 dtype): the fused C norm

    def __init__(self, dim: int, eps: float, unit_offset: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim) if not unit_offset else torch.zeros(dim))
        self.eps = eps
        self.unit_offset = unit_offset

    def enable_cpu_kernels(self) -> None:
        self.cpu_kernels = True

    def forward(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:  # [..., dim]
        if self.cpu_kernels and x.dim() == 2:
            return fused.rmsnorm(x, self.weight, self.eps, self.unit_offset, add)
        if add is not None:
            x.add_(add)
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.unit_offset:  # Gemma: scale in float32, then cast
            return (x32 * (1.0 + self.weight.float())).type_as(x)
        return self.weight * x32.to(x.dtype)


def rope_inverse_frequencies(
    head_dim: int, theta: float, scaling: dict | None, freq_factors: tuple[float, ...] | None = None
) -> torch.Tensor:
    """[head_dim // 2] float32 inverse frequencies, with HF's `linear` and `llama3` scalings.

    `freq_factors` are llama.cpp's precomputed `rope_freqs` divisors (llama 3.1 GGUFs).
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64, device="cpu").float() / head_dim))
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type == "linear":
        inv_freq = inv_freq / float(scaling["factor"])  # type: ignore[index]
    elif rope_type == "llama3":
        inv_freq = _llama3_frequencies(inv_freq, scaling)  # type: ignore[arg-type]
    elif rope_type != "default":
        raise ValueError(f"unsupported rope scaling type {rope_type!r} (supported: default, linear, llama3)")
    if freq_factors is not None:
        inv_freq = inv_freq / torch.tensor(freq_factors, dtype=torch.float32, device="cpu")
    return inv_freq


def _llama3_frequencies(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_context = float(scaling["original_max_position_embeddings"])
    low_wavelen, high_wavelen = old_context / low, old_context / high
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(is_medium, smoothed, scaled)


class RotaryEmbedding:
    """Rotate-half (neox) RoPE. `cos_sin(positions)` is computed once per step and shared by layers."""

    def __init__(self, inv_freq: torch.Tensor) -> None:
        self.inv_freq = inv_freq  # [head_dim // 2] float32 on CPU; moved per device on demand
        self._by_device: dict[torch.device, torch.Tensor] = {}

    def cos_sin(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self._by_device.get(positions.device)
        if inv_freq is None:
            inv_freq = self.inv_freq.to(positions.device)
            self._by_device[positions.device] = inv_freq
        freqs = positions.float()[:, None] * inv_freq[None, :]  # [T, D/2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [T, D]
        return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [T, heads, D]; cos, sin: [T, D]."""
    cos, sin = cos[:, None, :], sin[:, None, :]
    return x * cos + _rotate_half(x) * sin


ACTIVATIONS = {
    "silu": F.silu,
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


def fuse_linears(*linears: nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None, tuple]:
    """Concatenate the weights (and biases) of linears sharing an input into one tensor, once.

    Each linear's parameters are re-pointed to views of the fused tensor, so no memory is
    duplicated and the Hugging Face parameter names (`q_proj.weight`, ...) keep loading and
    saving as before. Returns (weight, bias, key): `key` identifies the parameters fused, so a
    caller can tell (`fused_key`) when they were replaced or moved and fuse again.
    """
    has_bias = [lin.bias is not None for lin in linears]
    if any(has_bias) and not all(has_bias):
        raise ValueError("cannot fuse linears where only some have a bias")
    with torch.inference_mode(False), torch.no_grad():
        weight = torch.cat([lin.weight for lin in linears])
        bias = torch.cat([lin.bias for lin in linears]) if all(has_bias) else None  # type: ignore[misc]
        start = 0
        for i, lin in enumerate(linears):
            rows = lin.weight.shape[0]
            lin.weight = nn.Parameter(weight[start : start + rows], requires_grad=False)
            if bias is not None:
                lin.bias = nn.Parameter(bias[start : start + rows], requires_grad=False)
            start += rows
    return weight, bias, fused_key(*linears)


def fused_key(*linears: nn.Linear) -> tuple:
    """What `fuse_linears` fused: the parameter objects (by id) and where their data lives."""
    return tuple(
        (id(lin.weight), lin.weight.data_ptr(), id(lin.bias), lin.bias.data_ptr() if lin.bias is not None else 0)
        for lin in linears
    )


class GatedMLP(nn.Module):
    """`down(act(gate(x)) * up(x))`: SwiGLU for llama, GeGLU (tanh) for Gemma.

    gate and up run as one matmul over their concatenated weights (fused on first use, see
    `fuse_linears`); the parameters keep their names.
    """

    def __init__(self, hidden: int, intermediate: int, activation: str) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"unsupported activation {activation!r} (supported: {sorted(ACTIVATIONS)})")
        self.gate_proj = Linear(hidden, intermediate, bias=False)
        self.up_proj = Linear(hidden, intermediate, bias=False)
        self.down_proj = Linear(intermediate, hidden, bias=False)
        self.act = ACTIVATIONS[activation]
        self.activation = activation
        self.intermediate = intermediate
        self.cpu_kernels = False
        self._fused: tuple[torch.Tensor, torch.Tensor | None, tuple] | None = None
        self.quantized: Q8Weight | Q5Weight | None = None

    def fuse_projections(self) -> None:
        self.fused_weight()

    def enable_cpu_kernels(self) -> None:
        self.cpu_kernels = True

    def quantize_weights(self, quantize) -> None:
        if self.quantized is None:
            self.quantized = quantize(self.fused_weight())
            self._fused = None
            release(self.gate_proj, self.up_proj)

    def fused_weight(self) -> Weight:
        if self.quantized is not None:
            return self.quantized
        fused = self._fused
        if fused is None or fused[2] != fused_key(self.gate_proj, self.up_proj):
            fused = self._fused = fuse_linears(self.gate_proj, self.up_proj)
        return fused[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [T, hidden] -> [T, hidden]
        gate_up = linear(x, self.fused_weight())  # [T, 2 * intermediate]
        if self.cpu_kernels:
            return self.down_proj(fused.gated_activation(gate_up, self.intermediate, self.activation))
        gate, up = gate_up[:, : self.intermediate], gate_up[:, self.intermediate :]
        return self.down_proj(self.act(gate) * up)
