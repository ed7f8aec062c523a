"""Start-up model loading for `jongleur serve`: settings -> `ServedModel`s in the registry.

The chat model is built by the catalog's builder (`jongleur.catalog.builder.build_served_model`)
when it is available; until then this module assembles one from the engine client and the
tokenizer. The embedding model is our own `Embedder`.
"""

from __future__ import annotations

import asyncio
import importlib
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
    name, path = await asyncio.to_thread(resolve_chat_model, settings)
    cache_dir = Path(settings.data_dir) / "cache"
    try:
        builder = importlib.import_module("jongleur.catalog.builder")
    except ImportError:
        builder = None
    if builder is not None and hasattr(builder, "build_served_model"):
        served = await builder.build_served_model(
            path, name=name, engine_config=engine_config(settings), cache_dir=cache_dir,
            in_process=settings.engine_mode == "inprocess",
        )
        return served
    return await _assemble(settings, name, path, cache_dir)


async def _assemble(settings: Settings, name: str, path: Path, cache_dir: Path) -> ServedModel:
    from jongleur.engine.builder import EngineSpec
    from jongleur.engine.client import InProcessEngineClient
    from jongleur.engine.process_client import ProcessEngineClient
    from jongleur.tokenizer import Tokenizer

    spec = EngineSpec(model_path=str(path), model_name=name, config=engine_config(settings), cache_dir=str(cache_dir))
    client = InProcessEngineClient(spec) if settings.engine_mode == "inprocess" else ProcessEngineClient(spec)
    await client.start()
    if path.is_dir():
        tokenizer = await asyncio.to_thread(Tokenizer.from_hf_dir, path)
    else:
        tokenizer = await asyncio.to_thread(Tokenizer.from_gguf, path, cache_dir=cache_dir)
    template = None
    try:
        chat_template = importlib.import_module("jongleur.tokenizer.chat_template")
        factory = getattr(chat_template, "ChatTemplate", None)
        if factory is not None and tokenizer.chat_template:
            template = factory.for_tokenizer(tokenizer) if hasattr(factory, "for_tokenizer") else factory(
                tokenizer.chat_template)
    except ImportError:
        log.warning("no chat-template renderer available; /v1/chat/completions will refuse %s", name)
    return ServedModel(
        name=name, version="1", kind="chat", engine=client, tokenizer=tokenizer, chat_template=template,
        tool_parser="hermes", context_window=client.info.max_model_len, architecture=client.info.architecture,
        source_path=str(path), details={"format": "gguf" if path.is_file() else "safetensors",
                                        "size": path.stat().st_size if path.is_file() else 0},
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
