"""Hugging Face folders: `config.json` (+ `generation_config.json`) and `*.safetensors` shards.

Reads both the transformers 4.x config style (`rope_theta`, `rope_scaling`, `rope_local_base_freq`)
and the 5.x style (`rope_parameters`, per layer type for Gemma 3).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from jongleur.models.base import ModelConfig
from jongleur.models.registry import hf_architecture
from jongleur.models.validation import ModelLoadError


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"cannot read {path.name}: {e}") from e
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path.name} is not a JSON object")
    return data


def _token_ids(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    return tuple(int(v) for v in values if isinstance(v, int))


def _rope(raw: dict[str, Any], layer_type: str | None) -> tuple[float, dict | None]:
    """(theta, scaling or None) for a layer type ("full_attention"/"sliding_attention") or the model."""
    params = raw.get("rope_parameters")
    if isinstance(params, dict) and layer_type is not None and isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    if isinstance(params, dict) and "rope_theta" in params:
        scaling = {k: v for k, v in params.items() if k != "rope_theta"}
        kind = scaling.get("rope_type", scaling.get("type", "default"))
        return float(params["rope_theta"]), (scaling if kind != "default" else None)
    theta_key = "rope_local_base_freq" if layer_type == "sliding_attention" else "rope_theta"
    theta = float(raw.get(theta_key, 10000.0))
    scaling = raw.get("rope_scaling") if layer_type != "sliding_attention" else None
    if isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) == "default":
        scaling = None
    return theta, scaling


def _layer_sliding(raw: dict[str, Any], arch: str, num_layers: int) -> tuple[bool, ...]:
    types = raw.get("layer_types")
    if arch == "qwen2" and not raw.get("use_sliding_window", False):
        return ()
    if isinstance(types, list) and len(types) == num_layers:
        return tuple(t == "sliding_attention" for t in types)
    if arch == "gemma3":
        pattern = int(raw.get("sliding_window_pattern", raw.get("_sliding_window_pattern", 6)))
        return tuple(bool((i + 1) % pattern) for i in range(num_layers))
    if arch == "mistral" and raw.get("sliding_window"):
        return (True,) * num_layers
    return ()


def hf_config(folder: Path) -> ModelConfig:
    """ModelConfig from `config.json` (the text part for multimodal Gemma 3)."""
    raw = _read_json(folder / "config.json")
    archs = raw.get("architectures") or []
    if not archs or not isinstance(archs[0], str):
        raise ModelLoadError("config.json has no `architectures` entry")
    arch = hf_architecture(archs[0])
    if archs[0].endswith("ForConditionalGeneration"):
        raw = {**raw, **(raw.get("text_config") or {})}
    if raw.get("mlp_bias"):
        raise ModelLoadError("MLP bias is not supported")
    try:
        return _build_config(raw, arch, folder)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelLoadError(f"config.json is missing or has an invalid field: {e}") from e


def _build_config(raw: dict[str, Any], arch: str, folder: Path) -> ModelConfig:
    heads = int(raw["num_attention_heads"])
    layers = int(raw["num_hidden_layers"])
    sliding = _layer_sliding(raw, arch, layers)
    theta, scaling = _rope(raw, "full_attention" if arch == "gemma3" else None)
    local_theta = _rope(raw, "sliding_attention")[0] if arch == "gemma3" else None
    eos = _token_ids(raw.get("eos_token_id"))
    generation = folder / "generation_config.json"
    if generation.exists():
        eos += tuple(i for i in _token_ids(_read_json(generation).get("eos_token_id")) if i not in eos)
    extra = {k: raw.get(k) for k in ("final_logit_softcapping", "attn_logit_softcapping") if raw.get(k)}
    return ModelConfig(
        architecture=arch,
        vocab_size=int(raw["vocab_size"]),
        hidden_size=int(raw["hidden_size"]),
        intermediate_size=int(raw["intermediate_size"]),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=int(raw.get("num_key_value_heads") or heads),
        head_dim=int(raw.get("head_dim") or int(raw["hidden_size"]) // heads),
        max_position_embeddings=int(raw.get("max_position_embeddings", 4096)),
        rms_norm_eps=float(raw.get("rms_norm_eps", 1e-6)),
        rope_theta=theta,
        rope_scaling=scaling,
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", arch == "gemma3")),
        attention_bias=arch == "qwen2" or bool(raw.get("attention_bias", False)),
        sliding_window=int(raw["sliding_window"]) if any(sliding) else None,
        layer_sliding=sliding,
        rope_local_theta=local_theta,
        query_pre_attn_scalar=float(raw.get("query_pre_attn_scalar", 256)) if arch == "gemma3" else None,
        hidden_activation=str(raw.get("hidden_activation") or raw.get("hidden_act") or "silu"),
        bos_token_id=raw.get("bos_token_id") if isinstance(raw.get("bos_token_id"), int) else None,
        eos_token_ids=eos,
        extra={**extra, "o_proj_bias": arch != "qwen2" and bool(raw.get("attention_bias", False))},
    )


def _shard_paths(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ModelLoadError("model.safetensors.index.json has no weight_map")
        names = sorted(set(weight_map.values()))
        paths = [folder / str(n) for n in names]
        for p in paths:  # the index may not point outside the folder
            if p.resolve().parent != folder.resolve() or not p.is_file():
                raise ModelLoadError(f"safetensors index names a missing or outside shard {p.name!r}")
        return paths
    paths = sorted(folder.glob("*.safetensors"))
    if not paths:
        raise ModelLoadError(f"no *.safetensors files in {folder}")
    return paths


def _rename(name: str, arch: str) -> str | None:
    """HF checkpoint name -> our parameter name; None to skip (vision tower, rotary buffers)."""
    if arch == "gemma3":
        if name.startswith("model.language_model."):  # transformers 5.x multimodal layout
            return "model." + name[len("model.language_model.") :]
        if name.startswith("language_model.model."):  # transformers 4.x multimodal layout
            return "model." + name[len("language_model.model.") :]
        if name.startswith(("vision_tower", "multi_modal_projector", "model.vision_tower")):
            return None
        if name.startswith("model.multi_modal_projector"):
            return None
    if name.endswith("rotary_emb.inv_freq"):
        return None
    return name


def hf_tensors(folder: Path, arch: str) -> Iterator[tuple[str, torch.Tensor]]:
    """(our name, tensor) for every weight of every shard; safetensors validates each header."""
    for path in _shard_paths(folder):
        try:
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():  # noqa: SIM118 - safe_open is not a Mapping
                    ours = _rename(name, arch)
                    if ours is not None:
                        yield ours, f.get_tensor(name)
        except ModelLoadError:
            raise
        except Exception as e:  # safetensors raises its own error types for corrupt headers/offsets
            raise ModelLoadError(f"cannot read {path.name}: {e}") from e
