"""Gemma 3 (text): sliding-window layers interleaved with global ones, QK-norm, four norms per layer.

Norm weights use HF's convention (`x * (1 + w)`); GGUF files store `1 + w`, and the GGUF loader
subtracts the 1 when it renames tensors. Sliding layers use the local RoPE base, global layers the
global base (and the configured rope scaling, as in HF).
"""

from __future__ import annotations

import torch
from torch import nn

from jongleur.engine.attention import AttentionMetadata
from jongleur.models.base import KVSpec, ModelConfig
from jongleur.models.layers import (
    Embedding,
    GatedMLP,
    RMSNorm,
    RotaryEmbedding,
    Weight,
    linear,
    rope_inverse_frequencies,
)
from jongleur.models.llama import Attention, KVCache


class Gemma3DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        hidden, eps = config.hidden_size, config.rms_norm_eps
        scale = (config.query_pre_attn_scalar or config.head_dim) ** -0.5
        self.is_sliding = config.layer_window(layer) is not None
        self.self_attn = Attention(config, config.layer_window(layer), scale, qk_norm=True)
        self.mlp = GatedMLP(hidden, config.intermediate_size, config.hidden_activation)
        self.input_layernorm = RMSNorm(hidden, eps, unit_offset=True)
        self.post_attention_layernorm = RMSNorm(hidden, eps, unit_offset=True)
        self.pre_feedforward_layernorm = RMSNorm(hidden, eps, unit_offset=True)
        self.post_feedforward_layernorm = RMSNorm(hidden, eps, unit_offset=True)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], kv_cache: KVCache, meta: AttentionMetadata
    ) -> torch.Tensor:  # [T, hidden]
        attn = self.self_attn(self.input_layernorm(x), rope, kv_cache, meta)
        x = x + self.post_attention_layernorm(attn)
        mlp = self.mlp(self.pre_feedforward_layernorm(x))
        return x + self.post_feedforward_layernorm(mlp)


class Gemma3Model(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Gemma3DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, unit_offset=True)


class Gemma3ForCausalLM(nn.Module):
    """`CausalLM` for Gemma 3 text models (the LM head is always tied to the embedding)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.extra.get("attn_logit_softcapping") is not None:
            raise ValueError("Gemma 3 attention logit softcapping is not supported by paged attention")
        self.config = config
        self.model = Gemma3Model(config)
        local_theta = config.rope_local_theta or 10000.0
        # HF applies rope scaling only to global layers; local layers use plain RoPE.
        self.global_rotary = RotaryEmbedding(
            rope_inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling)
        )
        self.local_rotary = RotaryEmbedding(rope_inverse_frequencies(config.head_dim, local_theta, None))
        self.embed_scale = config.hidden_size**0.5
        self.final_softcap: float | None = config.extra.get("final_logit_softcapping")
        self.quantized_head: Weight | None = None  # the tied head as int8 blocks; the embedding stays dense

    def forward(
        self,
        input_ids: torch.Tensor,  # [T] long
        positions: torch.Tensor,  # [T] long
        kv_caches: list[KVCache],
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # [T, hidden]
        x = self.model.embed_tokens(input_ids)
        # HF multiplies by the scale rounded to the model dtype.
        x = x * torch.tensor(self.embed_scale, dtype=x.dtype)
        global_rope = self.global_rotary.cos_sin(positions, x.dtype)
        local_rope = self.local_rotary.cos_sin(positions, x.dtype)
        for layer, kv_cache in zip(self.model.layers, kv_caches, strict=True):
            x = layer(x, local_rope if layer.is_sliding else global_rope, kv_cache, meta)
        return self.model.norm(x)

    def quantize_weights(self, quantize) -> None:
        if self.quantized_head is None:
            self.quantized_head = quantize(self.model.embed_tokens.weight)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:  # [N, hidden] -> [N, vocab] float32
        weight = self.quantized_head if self.quantized_head is not None else self.model.embed_tokens.weight
        logits = linear(hidden, weight).float()
        if self.final_softcap is not None:
            logits = torch.tanh(logits / self.final_softcap) * self.final_softcap
        return logits

    def kv_spec(self) -> KVSpec:
        c = self.config
        return KVSpec(num_layers=c.num_layers, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim)
