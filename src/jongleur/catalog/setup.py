"""Build the `CatalogManager` of a server from `Settings`; register the bundled defaults once.

Bundled models are recorded, not copied: their manifest carries the known SHA-256 and the place
`catalog/bundled.py` assembles and verifies them (`<data_dir>/bundled`). Copying a 400 MB GGUF a
second time into the blobs would double the disk use and add nothing: the assembly already checks
the digest, and the part packages are read-only.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from jongleur.catalog import bundled
from jongleur.catalog.manager import CatalogManager, ManagerConfig
from jongleur.catalog.manifest import Manifest, ManifestFile
from jongleur.catalog.served import ServedModel
from jongleur.catalog.store import ModelStore
from jongleur.config import Settings

log = logging.getLogger("jongleur.catalog")

QWEN_PARAMETERS = 494_032_768


def store_for(settings: Settings) -> ModelStore:
    return ModelStore(Path(settings.data_dir) / "models")


def register_bundled(store: ModelStore, data_dir: Path) -> None:
    """Record the bundled chat model as `qwen2.5-coder-0.5b-instruct@1` if its packages are installed."""
    if not bundled.available() or store.versions(bundled.QWEN_NAME):
        return
    store.register(Manifest(
        name=bundled.QWEN_NAME, tag="1", architecture="qwen2", format="gguf",
        files=(ManifestFile(bundled.QWEN_FILE, bundled.QWEN_SHA256, 0),), size=0,
        parameters=QWEN_PARAMETERS, context_window=32768, source=f"bundled:{bundled.QWEN_NAME}",
        external_path=str(data_dir / "bundled" / bundled.QWEN_FILE),
    ))
    log.info("registered the bundled %s in the model store", bundled.QWEN_NAME)


def _dtype_bytes(settings: Settings) -> int:
    # int8: 1.125 B per linear weight plus the dense fp32 embedding (a tied head is both): ~2 B on average
    return {"float32": 4, "bfloat16": 2, "float16": 2, "int8": 2}.get(settings.dtype, 4)  # auto: the worst case


def build_catalog(settings: Settings) -> CatalogManager:
    from jongleur.api.loading import engine_config

    store = store_for(settings)
    data_dir = Path(settings.data_dir)
    register_bundled(store, data_dir)

    async def load(path: Path, m: Manifest) -> ServedModel:
        from jongleur.catalog.loader import load_chat_model

        if m.source == f"bundled:{bundled.QWEN_NAME}":
            path = await asyncio.to_thread(bundled.qwen_gguf, data_dir / "bundled")
        return await load_chat_model(
            path, m.ref, engine_config(settings), version=m.tag,
            in_process=settings.engine_mode == "inprocess", cache_dir=data_dir / "cache",
            chat_template=m.chat_template,
        )

    config = ManagerConfig(
        memory_budget_bytes=settings.memory_budget_mb << 20, kv_bytes=settings.kv_cache_memory_mb << 20,
        dtype_bytes=_dtype_bytes(settings), keep_alive_s=settings.keep_alive_s,
        drain_timeout_s=settings.model_drain_timeout_s,
    )
    return CatalogManager(store, config, load)
