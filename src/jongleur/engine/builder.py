"""Build an `EngineCore` from an `EngineSpec` (picklable, so the engine process can build its own)."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from jongleur.engine.config import EngineConfig
from jongleur.engine.protocol import EngineInfo

log = logging.getLogger("jongleur.engine")


@dataclass(frozen=True)
class EngineSpec:
    model_path: str
    model_name: str
    config: EngineConfig = field(default_factory=EngineConfig)
    cache_dir: str | None = None  # where converted weights and tokenizers are cached
    structured_output: bool = True


def load_tokenizer(path: str, cache_dir: str | None = None):  # -> jongleur.tokenizer.Tokenizer
    """The tokenizer that belongs to a GGUF file or an HF folder."""
    from pathlib import Path

    from jongleur.tokenizer import Tokenizer

    source = Path(path)
    if source.is_dir():
        return Tokenizer.from_hf_dir(source)
    return Tokenizer.from_gguf(source, cache_dir=Path(cache_dir) / "tokenizers" if cache_dir else None)


def _packed_weights(loaded, config: EngineConfig, cache_dir: str | None):  # -> PackedWeightCache | None
    """The packed int8 weights' cache, for a GGUF (whose conversion is cached) in `int8` mode."""
    from jongleur.engine.core import resolve_weight_mode

    if loaded.format != "gguf" or resolve_weight_mode(config.dtype, torch.device(config.device)) != "int8":
        return None
    from jongleur.models.packed_cache import PackedWeightCache
    from jongleur.models.weight_cache import WeightCache

    return PackedWeightCache(WeightCache.at(cache_dir), loaded.source_path)


def build_engine(spec: EngineSpec):  # -> tuple[EngineCore, EngineInfo]
    from jongleur.engine.core import EngineCore, resolve_dtype
    from jongleur.models.loader import load_model

    started = time.monotonic()
    config = spec.config
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    loaded = load_model(spec.model_path, dtype=dtype, device=device, cache_dir=spec.cache_dir)
    tokenizer = load_tokenizer(spec.model_path, spec.cache_dir)
    eos = tuple(dict.fromkeys([*loaded.config.eos_token_ids, *tokenizer.eos_token_ids]))
    # Model embeddings may be padded past the tokenizer: ids beyond it are never valid or sampled.
    vocab_size = min(loaded.config.vocab_size, tokenizer.backend.get_vocab_size(with_added_tokens=True))
    compiler = None
    if spec.structured_output:
        from jongleur.engine.structured import GrammarCompiler

        # Building llguidance's tokenizer takes seconds: do it in the background, wait on first use.
        compiler = ThreadPoolExecutor(1, thread_name_prefix="grammar").submit(
            GrammarCompiler, tokenizer.backend, loaded.config.vocab_size, eos
        )
    core = EngineCore(
        loaded.model, config, eos, vocab_size=vocab_size, grammar_compiler=compiler,
        packed_weights=_packed_weights(loaded, config, spec.cache_dir),
    )
    info = EngineInfo(
        model_name=spec.model_name,
        architecture=loaded.config.architecture,
        vocab_size=vocab_size,
        max_model_len=core.max_model_len,
        eos_token_ids=eos,
        dtype=core.weight_mode,
        kv_block_size=config.block_size,
        kv_num_blocks=core.kv.num_blocks,
    )
    log.info(
        "engine ready: %s (%s, %s) in %.1fs, %d KV blocks of %d tokens",
        spec.model_name, info.architecture, info.dtype, time.monotonic() - started, info.kv_num_blocks, config.block_size,
    )
    return core, info
