"""The public entry point: `load_model(path)` for a GGUF file or an HF folder -> `LoadedModel`.

Models are built on the `meta` device, every tensor is checked against the expected names and
shapes, then assigned in the requested dtype. GGUF conversions are cached (see `weight_cache`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from jongleur.models.base import CausalLM, ModelConfig
from jongleur.models.cpu import cpu_flags
from jongleur.models.gguf_file import read_gguf
from jongleur.models.gguf_loader import gguf_config, gguf_tensors
from jongleur.models.hf_loader import hf_config, hf_tensors
from jongleur.models.registry import build_model
from jongleur.models.validation import (
    ModelLoadError,
    check_config,
    check_tensor,
    expected_shapes,
    materialize,
)
from jongleur.models.weight_cache import WeightCache

__all__ = ["LoadedModel", "ModelLoadError", "load_model", "select_dtype"]

ModelFormat = Literal["gguf", "hf"]


@dataclass
class LoadedModel:
    model: CausalLM  # an nn.Module in eval mode, weights on `device` in `dtype`
    config: ModelConfig
    source_path: Path  # the GGUF file or HF folder (tokenizers read it themselves)
    format: ModelFormat
    dtype: torch.dtype
    metadata: dict[str, Any] = field(default_factory=dict)  # GGUF metadata; {} for HF folders
    load_seconds: float = 0.0
    from_cache: bool = False


def _cpu_has_bf16() -> bool:
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def select_dtype(device: str | torch.device = "cpu") -> torch.dtype:
    """bf16 on CUDA and on CPUs with native bf16 (AVX-512 BF16 / AMX), else fp32."""
    kind = torch.device(device).type
    if kind == "cuda":
        return torch.bfloat16
    if kind == "cpu" and _cpu_has_bf16():
        return torch.bfloat16
    return torch.float32


def _build_on_meta(config: ModelConfig) -> nn.Module:
    check_config(config)
    try:
        with torch.device("meta"):
            return build_model(config)
    except ValueError as e:  # unsupported rope scaling, activation, softcapping
        raise ModelLoadError(f"unsupported model configuration: {e}") from e


def _collect(tensors: Any, model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """Drain a (name, tensor) iterator, checking each against the model before keeping it."""
    expected = expected_shapes(model)
    state: dict[str, torch.Tensor] = {}
    for name, tensor in tensors:
        if name == "lm_head.weight" and "lm_head.weight" not in expected:
            continue  # tied head: the embedding is used
        check_tensor(name, tuple(tensor.shape), expected, source)
        state[name] = tensor
    return state


def _load_hf(folder: Path, dtype: torch.dtype, device: torch.device) -> tuple[nn.Module, ModelConfig]:
    config = hf_config(folder)
    model = _build_on_meta(config)
    state = _collect(hf_tensors(folder, config.architecture), model, folder.name)
    return materialize(model, state, dtype, device, folder.name), config


def _load_gguf(
    path: Path, dtype: torch.dtype, device: torch.device, cache: WeightCache | None, progress: bool
) -> tuple[nn.Module, ModelConfig, dict[str, Any], bool]:
    gguf = read_gguf(path)  # header only (well under a second); validates every tensor's range
    config = gguf_config(gguf)
    model = _build_on_meta(config)
    cached = cache.get(path, dtype) if cache is not None else None
    if cached is not None:
        return materialize(model, cached, dtype, device, path.name), config, gguf.metadata, True
    state = _collect(gguf_tensors(gguf, config, dtype, progress), model, path.name)
    if cache is not None:
        cache.put(path, dtype, state)
    return materialize(model, state, dtype, device, path.name), config, gguf.metadata, False


def load_model(
    path: str | Path,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
) -> LoadedModel:
    """Load a GGUF file or an HF folder (`config.json` + safetensors) ready for inference.

    `dtype` defaults to `select_dtype(device)`; pass `torch.float32` for the precise mode.
    GGUF conversions are cached under `cache_dir` (default `$JONGLEUR_DATA_DIR/cache`).
    Raises `ModelLoadError` for anything missing, corrupt, truncated or unsupported.
    """
    start = time.perf_counter()
    source = Path(path)
    target = torch.device(device)
    dtype = dtype or select_dtype(target)
    if source.is_dir():
        if not (source / "config.json").is_file():
            raise ModelLoadError(f"{source} is a folder without config.json")
        model, config = _load_hf(source, dtype, target)
        fmt: ModelFormat = "hf"
        metadata: dict[str, Any] = {}
        from_cache = False
    elif source.is_file():
        cache = WeightCache.at(cache_dir) if use_cache else None
        model, config, metadata, from_cache = _load_gguf(source, dtype, target, cache, progress)
        fmt = "gguf"
    else:
        raise ModelLoadError(f"no model file or folder at {source}")
    return LoadedModel(
        model=model,  # type: ignore[arg-type]
        config=config,
        source_path=source,
        format=fmt,
        dtype=dtype,
        metadata=metadata,
        load_seconds=time.perf_counter() - start,
        from_cache=from_cache,
    )
