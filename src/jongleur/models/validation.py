"""Load-time checks shared by the loaders: `ModelLoadError`, config sanity, state-dict shapes.

Models are first built on the `meta` device (no memory), then every tensor from the file is
checked against the module's expected names and shapes before any real allocation happens, so a
file that lies about its configuration fails with a clear error instead of a huge allocation.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from jongleur.models.base import ModelConfig


class ModelLoadError(Exception):
    """A model file or folder cannot be loaded: missing, truncated, corrupt or unsupported."""


# Generous upper bounds: far above any model we could serve, far below a lying header.
_LIMITS = {
    "vocab_size": 1 << 22,
    "hidden_size": 1 << 16,
    "intermediate_size": 1 << 20,
    "num_layers": 1024,
    "num_heads": 1024,
    "num_kv_heads": 1024,
    "head_dim": 1024,
}


def check_config(config: ModelConfig) -> None:
    """Reject configurations that are inconsistent or absurd."""
    for name, limit in _LIMITS.items():
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= limit:
            raise ModelLoadError(f"model config {name}={value!r} is out of range (1..{limit})")
    if config.num_heads % config.num_kv_heads:
        raise ModelLoadError(
            f"model config num_heads={config.num_heads} is not a multiple of num_kv_heads={config.num_kv_heads}"
        )
    if config.layer_sliding and len(config.layer_sliding) != config.num_layers:
        raise ModelLoadError(
            f"model config lists {len(config.layer_sliding)} layer types for {config.num_layers} layers"
        )
    if any(config.layer_sliding) and not (config.sliding_window and config.sliding_window > 0):
        raise ModelLoadError(f"model config has sliding layers but sliding_window={config.sliding_window!r}")
    if not (config.rms_norm_eps > 0 and config.rope_theta > 0):
        raise ModelLoadError("model config rms_norm_eps and rope_theta must be positive")


def expected_shapes(model: nn.Module) -> dict[str, torch.Size]:
    return {name: p.shape for name, p in model.named_parameters()}


def check_tensor(name: str, shape: tuple[int, ...], expected: Mapping[str, torch.Size], source: str) -> None:
    """One tensor from a file: its name must be a model parameter and its shape must match."""
    if name not in expected:
        raise ModelLoadError(f"{source}: unexpected tensor {name!r} for this architecture")
    if tuple(shape) != tuple(expected[name]):
        raise ModelLoadError(
            f"{source}: tensor {name!r} has shape {tuple(shape)}, the config implies {tuple(expected[name])}"
        )


def materialize(
    model: nn.Module, state: dict[str, torch.Tensor], dtype: torch.dtype, device: torch.device, source: str
) -> nn.Module:
    """Assign `state` (already shape-checked) to a meta-built `model`, in `dtype` on `device`."""
    expected = expected_shapes(model)
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ModelLoadError(f"{source}: missing tensors {shown}")
    for name, tensor in state.items():
        check_tensor(name, tuple(tensor.shape), expected, source)
    converted = {name: t.to(device=device, dtype=dtype) for name, t in state.items()}
    model.load_state_dict(converted, strict=True, assign=True)
    return model.eval().requires_grad_(False)
