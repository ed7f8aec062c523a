"""GGUF -> ModelConfig and HF-named float tensors (llama, qwen2, gemma3).

Two llama.cpp conversions are undone here: the Q/K row permutation of the `llama` architecture
(its RoPE is interleaved, HF's is rotate-half) and Gemma's `1 + w` norm weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from jongleur.models.base import ModelConfig
from jongleur.models.gguf_file import GGUFFile
from jongleur.models.registry import gguf_architecture
from jongleur.models.validation import ModelLoadError

_GLOBAL_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
_LAYER_NAMES = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}
# `ffn_norm` is the norm before the MLP: llama's post_attention_layernorm, Gemma's pre_feedforward.
_FFN_NORM = {"llama": "post_attention_layernorm", "qwen2": "post_attention_layernorm", "gemma3": "pre_feedforward_layernorm"}
# Text of control tokens that end a turn in common chat formats (llama.cpp treats them as EOG too).
_END_TOKENS = {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "<|end_of_text|>"}
_CONTROL = 3


def _get(meta: dict[str, Any], key: str, default: Any = None, required: bool = False) -> Any:
    if key not in meta:
        if required:
            raise ModelLoadError(f"GGUF metadata is missing {key!r}")
        return default
    return meta[key]


def gguf_config(gguf: GGUFFile) -> ModelConfig:
    """ModelConfig from GGUF metadata (and the shapes of a few tensors)."""
    meta = gguf.metadata
    arch_name = _get(meta, "general.architecture", required=True)
    arch = gguf_architecture(str(arch_name))
    p = f"{arch_name}."
    embd = gguf.tensors.get("token_embd.weight")
    if embd is None:
        raise ModelLoadError("GGUF has no token_embd.weight tensor")
    hidden = int(_get(meta, p + "embedding_length", required=True))
    heads = int(_get(meta, p + "attention.head_count", required=True))
    head_dim = int(_get(meta, p + "attention.key_length", hidden // max(heads, 1)))
    layers = int(_get(meta, p + "block_count", required=True))
    is_gemma = arch == "gemma3"
    window = _get(meta, p + "attention.sliding_window") if is_gemma else None
    extra: dict[str, Any] = {}
    if "rope_freqs.weight" in gguf.tensors:  # llama 3.1+: precomputed frequency divisors
        extra["rope_freq_factors"] = tuple(float(x) for x in gguf.dequantize(gguf.tensors["rope_freqs.weight"]))
    if _get(meta, p + "final_logit_softcapping"):
        extra["final_logit_softcapping"] = float(meta[p + "final_logit_softcapping"])
    return ModelConfig(
        architecture="mistral" if arch == "llama" and "mistral" in str(_get(meta, "general.name", "")).lower()
        else arch,
        vocab_size=int(embd.shape[0]),
        hidden_size=hidden,
        intermediate_size=int(_get(meta, p + "feed_forward_length", required=True)),
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=int(_get(meta, p + "attention.head_count_kv", heads)),
        head_dim=head_dim,
        max_position_embeddings=int(_get(meta, p + "context_length", 4096)),
        rms_norm_eps=float(_get(meta, p + "attention.layer_norm_rms_epsilon", 1e-6)),
        rope_theta=float(_get(meta, p + "rope.freq_base", 1e6 if is_gemma else 1e4)),
        rope_scaling=_rope_scaling(meta, p),
        tie_word_embeddings="output.weight" not in gguf.tensors,
        attention_bias="blk.0.attn_q.bias" in gguf.tensors,
        sliding_window=int(window) if window else None,
        # llama.cpp: Gemma 3 has every 6th layer global, the rest sliding, local RoPE base 10000.
        layer_sliding=tuple(bool((i + 1) % 6) for i in range(layers)) if window else (),
        rope_local_theta=10000.0 if is_gemma else None,
        query_pre_attn_scalar=float(head_dim) if is_gemma else None,
        hidden_activation="gelu_pytorch_tanh" if is_gemma else "silu",
        bos_token_id=_get(meta, "tokenizer.ggml.bos_token_id"),
        eos_token_ids=_end_token_ids(meta),
        extra=extra,
    )


def _rope_scaling(meta: dict[str, Any], p: str) -> dict | None:
    kind = _get(meta, p + "rope.scaling.type", "none")
    if kind in ("none", None):
        return None
    if kind == "linear":
        return {"rope_type": "linear", "factor": float(_get(meta, p + "rope.scaling.factor", 1.0))}
    raise ModelLoadError(f"unsupported GGUF rope scaling type {kind!r} (supported: none, linear)")


def _end_token_ids(meta: dict[str, Any]) -> tuple[int, ...]:
    """eos, eot and eom ids from metadata, then control tokens whose text ends a turn."""
    ids: list[int] = []
    for key in ("eos_token_id", "eot_token_id", "eom_token_id"):
        value = meta.get(f"tokenizer.ggml.{key}")
        if isinstance(value, int) and value not in ids:
            ids.append(value)
    tokens, types = meta.get("tokenizer.ggml.tokens"), meta.get("tokenizer.ggml.token_type")
    if isinstance(tokens, list) and isinstance(types, np.ndarray) and len(types) == len(tokens):
        for i in np.flatnonzero(types == _CONTROL).tolist():
            if tokens[i] in _END_TOKENS and i not in ids:
                ids.append(i)
    return tuple(ids)


def hf_name(gguf_name: str, arch: str) -> str | None:
    """Our (HF) parameter name for a GGUF tensor; None for tensors consumed elsewhere."""
    if gguf_name in _GLOBAL_NAMES:
        return _GLOBAL_NAMES[gguf_name]
    if gguf_name == "rope_freqs.weight":
        return None
    parts = gguf_name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[3] in ("weight", "bias"):
        base = _FFN_NORM.get(arch, "") if parts[2] == "ffn_norm" else _LAYER_NAMES.get(parts[2])
        if base:
            return f"model.layers.{parts[1]}.{base}.{parts[3]}"
    raise ModelLoadError(f"GGUF tensor {gguf_name!r} is not part of the {arch} architecture")


def _unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's Q/K permutation: [n_head * head_dim, ...] rows back to rotate-half order."""
    half = w.shape[0] // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).transpose(1, 2).reshape(w.shape)


def gguf_tensors(
    gguf: GGUFFile, config: ModelConfig, dtype: torch.dtype, progress: bool = True
) -> Iterator[tuple[str, torch.Tensor]]:
    """(our name, tensor in `dtype`) for every weight, dequantized one at a time."""
    base_arch = "gemma3" if config.architecture == "gemma3" else "qwen2" if config.architecture == "qwen2" else "llama"
    infos = list(gguf.tensors.values())
    total = sum(i.n_bytes for i in infos)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"dequantize {gguf.path.name}", disable=not progress) as bar:
        for info in infos:
            name = hf_name(info.name, base_arch)
            if name is not None:
                w = torch.from_numpy(np.ascontiguousarray(gguf.dequantize(info)))  # float32, [out, in]
                if base_arch == "llama" and info.name.endswith(("attn_q.weight", "attn_k.weight")):
                    w = _unpermute(w, config.num_heads if "attn_q" in info.name else config.num_kv_heads)
                if base_arch == "gemma3" and info.name.endswith("norm.weight"):
                    w = w - 1.0  # GGUF stores Gemma norms as 1 + w
                yield name, w.to(dtype)
            bar.update(info.n_bytes)
