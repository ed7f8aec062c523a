"""`EngineConfig`: how one engine is sized and behaves. Built once, never mutated."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EngineConfig:
    block_size: int = 16  # tokens per KV block
    kv_cache_bytes: int = 512 << 20  # memory budget of the KV pool
    num_blocks: int | None = None  # overrides kv_cache_bytes when set (tests)
    max_num_seqs: int = 32  # sequences in one batch
    max_num_batched_tokens: int = 512  # token budget per step (decodes + prefill chunks)
    max_waiting: int = 256  # queue limit: past it, requests are refused with 429
    max_model_len: int | None = None  # context window; None = the model's
    enable_prefix_caching: bool = True
    dtype: str = "auto"  # "auto" | "float32" | "bfloat16" | "float16" | "int8" (CPU: int8 weights, fp32 activations)
    device: str = "cpu"
    num_threads: int | None = None  # torch intra-op threads; None = torch's default
    seed: int = 0  # global RNG seed for unseeded sampling
