"""Turn a model file into a `ServedModel`: start its engine, load its tokenizer and template."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from jongleur.catalog.served import ServedModel
from jongleur.engine.builder import EngineSpec, load_tokenizer
from jongleur.engine.client import InProcessEngineClient
from jongleur.engine.config import EngineConfig
from jongleur.engine.process_client import ProcessEngineClient

log = logging.getLogger("jongleur.catalog")

# Tool-call formats by architecture: Qwen2/2.5 emit hermes-style <tool_call> blocks.
TOOL_PARSERS = {"qwen2": "hermes"}


async def load_chat_model(
    path: str | Path,
    name: str,
    config: EngineConfig,
    *,
    version: str = "1",
    in_process: bool = False,
    cache_dir: str | Path | None = None,
    chat_template: str | None = None,
) -> ServedModel:
    """Start an engine for `path` (GGUF file or HF folder) and return it ready to serve.

    `in_process` runs the engine loop in a thread (tests); the default is its own process.
    `chat_template` overrides the model's own (base models such as Gemma 3 270M have none).
    """
    source = Path(path)
    spec = EngineSpec(
        model_path=str(source), model_name=name, config=config, cache_dir=str(cache_dir) if cache_dir else None
    )
    engine = InProcessEngineClient(spec) if in_process else ProcessEngineClient(spec)
    tokenizer_task = asyncio.to_thread(load_tokenizer, str(source), spec.cache_dir)
    tokenizer, _ = await asyncio.gather(tokenizer_task, engine.start())
    info = engine.info
    template = chat_template or tokenizer.chat_template
    if template is None:
        log.warning("%s has no chat template: /v1/chat/completions will refuse it; use completions", name)
    return ServedModel(
        name=name,
        version=version,
        kind="chat",
        engine=engine,
        tokenizer=tokenizer,
        chat_template=template,
        tool_parser=TOOL_PARSERS.get(info.architecture),
        context_window=info.max_model_len,
        architecture=info.architecture,
        source_path=str(source),
        details={
            "format": "gguf" if source.is_file() else "safetensors",
            "dtype": info.dtype,
            "device": config.device,
            "kv_block_size": info.kv_block_size,
            "kv_num_blocks": info.kv_num_blocks,
        },
    )
