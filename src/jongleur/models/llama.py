"""The llama family: Llama 2/3, Mistral, Qwen2/2.5 (QKV bias), tied or untied LM head.

Parameter names follow Hugging Face (`model.layers.N.self_attn.q_proj.weight`, ...) so an HF
state dict loads as is; the GGUF loader renames its tensors to these names.
"""

from __future__ import annotations

import torch
from torch import nn

from jongleur.engine.attention import AttentionMetadata, paged_attention
from jongleur.models import fused
from jongleur.models.base import KVSpec, ModelConfig
from jongleur.models.layers import (
    Embedding,
    GatedMLP,
    Linear,
    RMSNorm,
    RotaryEmbedding,
    Weight,
    apply_rope,
    fuse_linears,
    fused_key,
    linear,
    release,
    rope_inverse_frequencies,
)

KVCache = tuple[torch.Tensor, torch.Tensor]  # (k, v): [slots, kv_heads, head_dim]


class Attention(nn.Module):
    """Multi-head attention with GQA, optional QKV bias and optional per-head QK-norm (Gemma 3)."""

    def __init__(
        self, config: ModelConfig, sliding_window: int | None, scale: float, qk_norm: bool = False
    ) -> None:
        super().__init__()
        c = config
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.q_proj = Linear(c.hidden_size, c.num_heads * c.head_dim, bias=c.attention_bias)
        self.k_proj = Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.attention_bias)
        self.v_proj = Linear(c.hidden_size, c.num_kv_heads * c.head_dim, bias=c.attention_bias)
        self.o_proj = Linear(c.num_heads * c.head_dim, c.hidden_size, bias=bool(c.extra.get("o_proj_bias")))
        self.q_norm = RMSNorm(c.head_dim, c.rms_norm_eps, unit_offset=True) if qk_norm else None
        self.k_norm = RMSNorm(c.head_dim, c.rms_norm_eps, unit_offset=True) if qk_norm else None
        self.sliding_window = sliding_window
        self.scale = scale
        self.q_size, self.kv_size = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        # q, k and v run as one matmul over concatenated weights, fused on first use (see `fuse_linears`).
        self._fused: tuple[torch.Tensor, torch.Tensor | None, tuple] | None = None
        self.quantized_qkv: tuple[Weight, torch.Tensor | None] | None = None
        self.cpu_kernels = False

    def fuse_projections(self) -> None:
        self.fused_qkv()

    def enable_cpu_kernels(self) -> None:
        self.cpu_kernels = True

    def quantize_weights(self, quantize) -> None:
        if self.quantized_qkv is None:
            weight, bias = self.fused_qkv()
            self.quantized_qkv = (quantize(weight), bias)
            self._fused = None
            release(self.q_proj, self.k_proj, self.v_proj)

    def fused_qkv(self) -> tuple[Weight, torch.Tensor | None]:
        if self.quantized_qkv is not None:
            return self.quantized_qkv
        fused = self._fused
        if fused is None or fused[2] != fused_key(self.q_proj, self.k_proj, self.v_proj):
            fused = self._fused = fuse_linears(self.q_proj, self.k_proj, self.v_proj)
        return fused[0], fused[1]

    def forward(
        self,
        x: torch.Tensor,  # [T, hidden]
        rope: tuple[torch.Tensor, torch.Tensor],  # cos, sin: [T, head_dim]
        kv_cache: KVCache,
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # [T, hidden]
        t = x.shape[0]
        qkv = linear(x, *self.fused_qkv())  # [T, q_size + 2 * kv_size]
        q = qkv[:, : self.q_size].view(t, self.num_heads, self.head_dim)
        k = qkv[:, self.q_size : self.q_size + self.kv_size].view(t, self.num_kv_heads, self.head_dim)
        v = qkv[:, self.q_size + self.kv_size :].view(t, self.num_kv_heads, self.head_dim)
        if self.q_norm is not None and self.k_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
            if self.cpu_kernels:  # normed q and k are fresh contiguous tensors: rotate them in place
                fused.rope_(q.view(t, -1), self.num_heads, self.head_dim, *rope)
                fused.rope_(k.view(t, -1), self.num_kv_heads, self.head_dim, *rope)
            else:
                q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        elif self.cpu_kernels:  # q and k heads sit side by side in each qkv row: one in-place pass
            fused.rope_(qkv, self.num_heads + self.num_kv_heads, self.head_dim, *rope)
        else:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        out = paged_attention(q, k, v, kv_cache[0], kv_cache[1], meta, self.scale, self.sliding_window)
        return self.o_proj(out.reshape(t, self.num_heads * self.head_dim))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.self_attn = Attention(config, config.layer_window(layer), config.head_dim**-0.5)
        self.mlp = GatedMLP(config.hidden_size, config.intermediate_size, config.hidden_activation)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], kv_cache: KVCache, meta: AttentionMetadata
    ) -> torch.Tensor:  # [T, hidden]
        attn = self.self_attn(self.input_layernorm(x), rope, kv_cache, meta)
        h = self.post_attention_layernorm(x, add=attn)  # x += attn, in place, then normed
        return x.add_(self.mlp(h))


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """`CausalLM` for llama, mistral and qwen2 configs."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.model = LlamaModel(config)
        self.lm_head = (
            None if config.tie_word_embeddings else Linear(config.hidden_size, config.vocab_size, bias=False)
        )
        self.quantized_head: Weight | None = None
        freq_factors = config.extra.get("rope_freq_factors")
        self.rotary = RotaryEmbedding(
            rope_inverse_frequencies(config.head_dim, config.rope_theta, config.rope_scaling, freq_factors)
        )

    def forward(
        self,
        input_ids: torch.Tensor,  # [T] long
        positions: torch.Tensor,  # [T] long
        kv_caches: list[KVCache],
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # [T, hidden]
        x = self.model.embed_tokens(input_ids)
        rope = self.rotary.cos_sin(positions, x.dtype)
        for layer, kv_cache in zip(self.model.layers, kv_caches, strict=True):
            x = layer(x, rope, kv_cache, meta)
        return self.model.norm(x)

    def quantize_weights(self, quantize) -> None:
        if self.lm_head is None and self.quantized_head is None:  # tied: the embedding stays dense for lookups
            self.quantized_head = quantize(self.model.embed_tokens.weight)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:  # [N, hidden] -> [N, vocab] float32
        if self.lm_head is not None:
            return self.lm_head(hidden).float()
        weight = self.quantized_head if self.quantized_head is not None else self.model.embed_tokens.weight
        return linear(hidden, weight).float()

    def kv_spec(self) -> KVSpec:
        c = self.config
        return KVSpec(num_layers=c.num_layers, num_kv_heads=c.num_kv_heads, head_dim=c.head_dim)
