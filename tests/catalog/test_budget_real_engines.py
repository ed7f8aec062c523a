"""The memory budget with real engines: tiny random-weight models served by in-process engines.

Two models fill the budget; a third unloads the least recently used idle one, never a model with
a request running (whose stream then finishes whole); a busy budget is `NoRoom`, a model larger
than the budget `ModelTooLarge`. Keep-alive unloads an idle engine, never a running one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from jongleur.catalog.loader import load_chat_model
from jongleur.catalog.manager import CatalogManager, LoadedModel, ManagerConfig, ModelTooLarge, NoRoom
from jongleur.catalog.manifest import Manifest
from jongleur.catalog.served import ServedModel
from jongleur.catalog.store import ModelStore
from jongleur.engine.config import EngineConfig
from jongleur.engine.types import EngineOutput, EngineRequest, SamplingParams

ENGINE = EngineConfig(num_blocks=64, max_num_seqs=4, max_model_len=256)
LONG = 200  # tokens of the request that keeps a model busy


def budget_manager(tmp_path: Path, model_dir: Path, loads: list[str], **kw: float) -> CatalogManager:
    """Models a, b, c imported from the same tiny folder; a budget that holds exactly two."""
    store = ModelStore(tmp_path / "models")
    for name in ("a", "b", "c"):
        store.import_path(model_dir, name=name, tag="1")

    async def load(path: Path, m: Manifest) -> ServedModel:
        loads.append(m.ref)
        return await load_chat_model(path, m.ref, ENGINE, version=m.tag, in_process=True)

    config = ManagerConfig(memory_budget_bytes=0, kv_bytes=1 << 20, settle_s=0.0, **kw)
    mgr = CatalogManager(store, config, load)
    one = mgr.estimate(store.find("a@1"))
    mgr.config = dataclasses.replace(config, memory_budget_bytes=2 * one + one // 2)
    return mgr


async def start_long_request(entry: LoadedModel) -> tuple[AsyncIterator[EngineOutput], int]:
    """A request that runs for `LONG` tokens: its stream after the first output, and that output's tokens."""
    assert entry.served.engine is not None
    request = EngineRequest(f"long-{entry.manifest.ref}", [1, 2, 3],
                            SamplingParams(max_tokens=LONG, temperature=0.0, ignore_eos=True))
    stream = entry.served.engine.generate(request)
    first = await asyncio.wait_for(stream.__anext__(), timeout=60)
    assert first.new_token_ids
    return stream, len(first.new_token_ids)


async def finish(running: tuple[AsyncIterator[EngineOutput], int]) -> int:
    """Read the stream to its end: the number of tokens the request produced in all."""
    stream, tokens = running
    async for out in stream:
        tokens += len(out.new_token_ids)
    return tokens


def loaded_refs(mgr: CatalogManager) -> list[str]:
    return sorted(e.manifest.ref for e in mgr.loaded())


def test_lru_unload_spares_the_busy_model(tmp_path: Path, tiny_qwen2_dir: Path) -> None:
    async def run() -> None:
        loads: list[str] = []
        mgr = budget_manager(tmp_path, tiny_qwen2_dir, loads)
        a, b, c = (mgr.store.find(f"{n}@1") for n in "abc")
        entry_a = await mgr.acquire(a)
        await mgr.acquire(b)
        busy = await start_long_request(entry_a)  # a: least recently used, but busy
        await mgr.acquire(c)  # b (idle) is unloaded to make room; a keeps running
        assert loaded_refs(mgr) == ["a@1", "c@1"]
        assert entry_a.served.engine is not None and entry_a.served.engine.is_alive()
        busy_c = await start_long_request(next(e for e in mgr.loaded() if e.manifest.ref == "c@1"))
        with pytest.raises(NoRoom):
            await mgr.acquire(b)  # both loaded models are busy: nothing is unloaded under them
        assert loaded_refs(mgr) == ["a@1", "c@1"]
        assert await asyncio.wait_for(finish(busy), timeout=120) == LONG  # finished whole
        await mgr.acquire(b)  # a is idle now: it goes
        assert loaded_refs(mgr) == ["b@1", "c@1"] and loads == ["a@1", "b@1", "c@1", "b@1"]
        assert await asyncio.wait_for(finish(busy_c), timeout=120) == LONG
        assert all(e.inflight == 0 for e in mgr.loaded())
        huge = mgr.store.register(dataclasses.replace(a, name="huge", parameters=10**12))
        with pytest.raises(ModelTooLarge):
            await mgr.acquire(huge)  # larger than the whole budget: a clear error, nothing unloaded
        assert loaded_refs(mgr) == ["b@1", "c@1"]
        await mgr.close()

    asyncio.run(run())


def test_keep_alive_unloads_idle_real_engine(tmp_path: Path, tiny_qwen2_dir: Path) -> None:
    async def run() -> None:
        mgr = budget_manager(tmp_path, tiny_qwen2_dir, [], keep_alive_s=0.2)
        entry = await mgr.acquire(mgr.store.find("a@1"))
        await mgr.acquire(mgr.store.find("b@1"), pin=True)
        busy = await start_long_request(entry)
        await asyncio.sleep(0.3)
        await mgr.sweep()
        assert loaded_refs(mgr) == ["a@1", "b@1"]  # past its keep-alive, but a request is running
        assert await asyncio.wait_for(finish(busy), timeout=120) == LONG
        await asyncio.sleep(0.3)
        await mgr.sweep()
        assert loaded_refs(mgr) == ["b@1"]  # idle past keep-alive; b is pinned
        await mgr.close()

    asyncio.run(run())


def test_per_model_keep_alive(tmp_path: Path, tiny_qwen2_dir: Path) -> None:
    """A request's keep-alive: 0 unloads once its request ends, negative keeps, None is the default."""
    async def run() -> None:
        mgr = budget_manager(tmp_path, tiny_qwen2_dir, [], keep_alive_s=600)
        a = await mgr.acquire(mgr.store.find("a@1"))
        b = await mgr.acquire(mgr.store.find("b@1"))
        expires = mgr.expires_at(a)
        assert expires is not None and 590 < expires - time.time() <= 600
        mgr.set_keep_alive("b@1", -1)
        assert mgr.expires_at(b) is None
        busy = await start_long_request(a)
        mgr.set_keep_alive("a@1", 0)
        await mgr.sweep()
        assert loaded_refs(mgr) == ["a@1", "b@1"]  # 0, but its request is still running
        assert await asyncio.wait_for(finish(busy), timeout=120) == LONG
        await mgr.sweep()
        assert loaded_refs(mgr) == ["b@1"]  # right after the request
        mgr.config = dataclasses.replace(mgr.config, keep_alive_s=0)
        await mgr.sweep()
        assert loaded_refs(mgr) == ["b@1"]  # kept: its own keep-alive is negative
        mgr.set_keep_alive("b@1", None)
        await mgr.sweep()
        assert loaded_refs(mgr) == []  # back to the manager's (now 0)
        await mgr.close()

    asyncio.run(run())
