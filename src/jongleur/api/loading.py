"""Start-up model loading for `jongleur serve`: settings -> `ServedModel`s in the registry.

The chat model is started by the catalog's loader (`jongleur.catalog.loader.load_chat_model`);
the embedding model is our own `Embedder`.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from jongleur.api.model_registry import ModelRegistry
from jongleur.catalog import bundled
from jongleur.catalog.served import ServedModel
from jongleur.config import Settings

log = logging.getLogger("jongleur.api")


def resolve_chat_model(settings: Settings) -> tuple[str, Path]:
    """(public name, file or folder) of the configured chat model."""
    spec = settings.model
    if spec.lower() == bundled.QWEN_NAME:
        path = bundled.qwen_gguf(Path(settings.data_dir) / "bundled")
        return settings.served_model_name or bundled.QWEN_NAME, path
    if spec.lower() == bundled.GEMMA_NAME:
        return settings.served_model_name or bundled.GEMMA_NAME, bundled.gemma_gguf(Path(settings.data_dir) / "bundled")
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model {spec!r} is neither a bundled model nor an existing path")
    name = settings.served_model_name or (path.stem if path.is_file() else path.name).lower()
    return name, path


def engine_config(settings: Settings) -> Any:
    from jongleur.engine.config import EngineConfig

    return EngineConfig(
        kv_cache_bytes=settings.kv_cache_memory_mb << 20,
        max_num_seqs=settings.max_num_seqs,
        max_num_batched_tokens=settings.max_num_batched_tokens,
        max_waiting=settings.max_queue,
        max_model_len=settings.max_model_len,
        dtype=settings.dtype,
    )


async def build_chat_model(settings: Settings) -> ServedModel:
    from jongleur.catalog.loader import load_chat_model

    name, path = await asyncio.to_thread(resolve_chat_model, settings)
    return await load_chat_model(
        path, name, engine_config(settings), in_process=settings.engine_mode == "inprocess",
        cache_dir=Path(settings.data_dir) / "cache",
    )


async def build_embedding_model(settings: Settings) -> ServedModel:
    from jongleur.embeddings import Embedder

    spec = settings.embedding_model
    if spec.lower() == bundled.MINILM_NAME:
        name, path = bundled.MINILM_NAME, bundled.minilm_dir()
    else:
        path = Path(spec).expanduser()
        name = path.name.lower()
    embedder = await asyncio.to_thread(Embedder.from_dir, path, name)
    return ServedModel(
        name=name, version="1", kind="embedding", engine=None, tokenizer=embedder.tokenizer, embedder=embedder,
        context_window=embedder.max_tokens, architecture="bert", source_path=str(path),
        details={"format": "safetensors", "parameter_size": "23M"},
    )


def make_loader(settings: Settings) -> Any:
    async def load(registry: ModelRegistry) -> None:
        if settings.embedding_model:
            registry.add(await build_embedding_model(settings))
        if settings.model:
            registry.add(await build_chat_model(settings))

    return load
