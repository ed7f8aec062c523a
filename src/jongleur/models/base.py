"""What every architecture module provides to the engine.

The engine sees a `CausalLM`: flattened token ids and positions in, hidden states out, logits
from hidden states, and a `KVSpec` to size its cache. Architectures live in their own modules
(`llama.py`, `gemma3.py`) and register themselves in `registry.py`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from jongleur.engine.attention import AttentionMetadata


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters, read from GGUF metadata or an HF `config.json`."""

    architecture: str  # registry key, e.g. "llama", "qwen2", "mistral", "gemma3"
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None  # HF-style (llama3 / linear); None = plain RoPE
    tie_word_embeddings: bool = False
    attention_bias: bool = False  # QKV bias (Qwen2)
    # Gemma 3
    sliding_window: int | None = None
    layer_sliding: tuple[bool, ...] = ()  # per layer: True = sliding-window attention
    rope_local_theta: float | None = None  # RoPE base for sliding layers
    query_pre_attn_scalar: float | None = None  # attention scale = this ** -0.5
    hidden_activation: str = "silu"
    # tokens
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()
    extra: dict = field(default_factory=dict)

    def layer_window(self, layer: int) -> int | None:
        if self.layer_sliding and self.layer_sliding[layer]:
            return self.sliding_window
        return None


@dataclass(frozen=True)
class KVSpec:
    """What the KV cache must hold per token: 2 x layers x kv_heads x head_dim elements."""

    num_layers: int
    num_kv_heads: int
    head_dim: int

    def bytes_per_token(self, dtype: torch.dtype) -> int:
        element = torch.empty((), dtype=dtype).element_size()
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * element


class CausalLM(Protocol):
    config: ModelConfig

    def forward(
        self,
        input_ids: torch.Tensor,  # [T] long
        positions: torch.Tensor,  # [T] long
        kv_caches: list[tuple[torch.Tensor, torch.Tensor]],  # per layer (k, v): [slots, kv_heads, head_dim]
        meta: AttentionMetadata,
    ) -> torch.Tensor:  # [T, hidden]
        ...

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:  # [N, hidden] -> [N, vocab] float32
        ...

    def kv_spec(self) -> KVSpec: ...
