"""The catalog manager with fake engines: updates (broken versions on demand) and weighted aliases.

The memory budget, LRU unloads, busy models and keep-alive run on real engines in
`test_budget_real_engines.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from jongleur.catalog.manager import CatalogManager, ManagerConfig, UpdateFailed
from jongleur.catalog.manifest import Manifest, ManifestFile
from jongleur.catalog.served import ServedModel
from jongleur.catalog.store import AliasTarget, ModelStore
from jongleur.engine.types import EngineRequest, SamplingParams

MB = 1 << 20


class FakeEngine:
    def __init__(self, broken: bool = False) -> None:
        self.broken = broken
        self.alive = True
        self.release = asyncio.Event()

    async def generate(self, request: EngineRequest) -> AsyncIterator[SimpleNamespace]:
        if self.broken:
            return
        yield SimpleNamespace(new_token_ids=[1])
        if request.request_id.startswith("hold"):
            await self.release.wait()
        yield SimpleNamespace(new_token_ids=[2])

    def is_alive(self) -> bool:
        return self.alive

    async def shutdown(self) -> None:
        self.alive = False


def add(store: ModelStore, name: str, tag: str, params_mb: int) -> Manifest:
    m = Manifest(name=name, tag=tag, architecture="llama", format="gguf",
                 files=(ManifestFile("m.gguf", "0" * 64, 1),), size=1, parameters=params_mb * MB // 4,
                 external_path="/nonexistent")
    return store.register(m)


def manager(tmp_path: Path, budget_mb: int = 100, broken: set[str] | None = None, **kw: float) -> CatalogManager:
    store = ModelStore(tmp_path / "models")
    engines: dict[str, FakeEngine] = {}

    async def load(path: Path, m: Manifest) -> ServedModel:
        if m.name == "unknown":
            raise ValueError("unknown architecture 'foo'")
        engines[m.ref] = FakeEngine(broken=m.ref in (broken or set()))
        tok = SimpleNamespace(encode=lambda s: [5], decode=lambda ids: "ok")
        return ServedModel(name=m.ref, version=m.tag, kind="chat", engine=engines[m.ref], tokenizer=tok)

    mgr = CatalogManager(store, ManagerConfig(memory_budget_bytes=budget_mb * MB, kv_bytes=10 * MB,
                                              settle_s=kw.pop("settle_s", 0.0), **kw), load)
    mgr.engines = engines  # type: ignore[attr-defined]
    return mgr


async def hold(mgr: CatalogManager, ref: str) -> AsyncIterator[SimpleNamespace]:
    entry = next(e for e in mgr.loaded() if e.manifest.ref == ref)
    assert entry.served.engine is not None
    stream = entry.served.engine.generate(EngineRequest("hold-1", [1], SamplingParams(max_tokens=2)))
    await stream.__anext__()
    return stream


def test_update_switches_drains_and_rejects_broken(tmp_path: Path) -> None:
    async def run() -> None:
        mgr = manager(tmp_path, broken={"m@3"}, settle_s=0.05)
        for tag in ("1", "2", "3"):
            add(mgr.store, "m", tag, 10)
        add(mgr.store, "unknown", "1", 10)
        mgr.store.set_alias("chat", [AliasTarget("m@1")])
        m1, _ = mgr.lookup("chat")
        await mgr.acquire(m1)
        stream = await hold(mgr, "m@1")  # an in-flight request on the old version

        async def finish_later() -> None:
            await asyncio.sleep(0.3)
            mgr.engines["m@1"].release.set()  # type: ignore[attr-defined]
            async for _ in stream:
                pass

        finisher = asyncio.create_task(finish_later())
        report = await mgr.update("chat", [AliasTarget("m@2")])
        await finisher
        assert report["to"] == ["m@2"] and report["drain"] == {"m@1": "unloaded"}
        assert report["drain_s"] >= 0.25  # waited for the in-flight request
        assert mgr.lookup("chat")[0].ref == "m@2"
        for bad in ("m@3", "unknown@1", "m@9"):  # no tokens / load error / missing
            with pytest.raises(UpdateFailed):
                await mgr.update("chat", [AliasTarget(bad)])
            assert mgr.lookup("chat")[0].ref == "m@2"
            assert [e.manifest.ref for e in mgr.loaded()] == ["m@2"]
        report = await mgr.rollback("chat")
        assert report["to"] == ["m@1"] and mgr.lookup("chat")[0].ref == "m@1"
        await mgr.close()

    asyncio.run(run())


def test_weighted_alias_splits_traffic(tmp_path: Path) -> None:
    mgr = manager(tmp_path)
    add(mgr.store, "m", "1", 10)
    add(mgr.store, "m", "2", 10)
    mgr.store.set_alias("chat", [AliasTarget("m@1", 80), AliasTarget("m@2", 20)])
    picks = [mgr.lookup("chat")[0].ref for _ in range(2000)]
    assert 0.15 < picks.count("m@2") / len(picks) < 0.25
