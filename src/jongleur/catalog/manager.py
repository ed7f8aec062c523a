"""`CatalogManager`: which store versions are loaded, under a memory budget, and hot swaps.

- A request names an alias (`chat`), a version (`name@2`, Ollama's `name:2`) or a model (`name`:
  its latest version). Aliases may split traffic between versions by weight (canary).
- A version loads on first use (or when pinned). The estimate of its memory is its weights in the
  serving dtype plus the engine's KV pool; when it does not fit, idle models are unloaded least
  recently used first. A model with requests in flight (or used within `settle_s`) is never
  unloaded; a model larger than the whole budget is `ModelTooLarge` (400), no room now is
  `NoRoom` (503 + Retry-After).
- Idle models unload after their keep-alive: the manager's `keep_alive_s`, or what the last
  request set (Ollama's `keep_alive`: 0 = right after it, negative = never); pinned ones never.
- `update(alias, targets)`: verify digests, load the new version beside the old, send it a canary
  prompt, switch the alias (one atomic file replace), wait until the old version has no request in
  flight, unload it. Any failure before the switch leaves the alias and the old version as they were.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jongleur.catalog.events import CatalogEvents
from jongleur.catalog.inflight import TrackedEngine
from jongleur.catalog.manifest import Manifest
from jongleur.catalog.names import parse_ref
from jongleur.catalog.served import ServedModel
from jongleur.catalog.store import AliasTarget, ModelStore, NotInStore

log = logging.getLogger("jongleur.catalog")

LoadFn = Callable[[Path, Manifest], Awaitable[ServedModel]]


class CatalogError(RuntimeError):
    status = 400
    code = "catalog_error"


class ModelTooLarge(CatalogError):
    status, code = 400, "model_too_large"


class NoRoom(CatalogError):
    status, code = 503, "insufficient_memory"


class UpdateFailed(CatalogError):
    status, code = 422, "update_failed"


@dataclass
class LoadedModel:
    manifest: Manifest
    served: ServedModel
    estimate: int
    inflight: int = 0
    last_used: float = field(default_factory=time.monotonic)
    loaded_at: float = field(default_factory=time.time)
    pinned: bool = False
    retiring: bool = False
    keep_alive_s: float | None = None  # set by a request (Ollama's keep_alive); None: the manager's


@dataclass(frozen=True)
class ManagerConfig:
    memory_budget_bytes: int
    kv_bytes: int
    dtype_bytes: int = 4
    keep_alive_s: float = 300.0
    settle_s: float = 1.0  # a model used this recently counts as busy (resolve -> generate gap)
    drain_timeout_s: float = 300.0
    canary_prompt: str = "Hello"


class CatalogManager:
    def __init__(self, store: ModelStore, config: ManagerConfig, load_fn: LoadFn) -> None:
        self.store = store
        self.config = config
        self._load_fn = load_fn
        self._loaded: dict[str, LoadedModel] = {}
        self._lock = asyncio.Lock()  # loads and unloads, one at a time
        self._update_lock = asyncio.Lock()
        self._sweeper: asyncio.Task[None] | None = None
        self.events = CatalogEvents()
        self._wake_sweeper = asyncio.Event()  # a keep-alive changed: sweep now, not at the next period

    # -- views --------------------------------------------------------------------------
    def loaded(self) -> list[LoadedModel]:
        return list(self._loaded.values())

    def used_bytes(self) -> int:
        return sum(e.estimate for e in self._loaded.values())

    def estimate(self, m: Manifest) -> int:
        weights = m.parameters * self.config.dtype_bytes if m.parameters else m.size
        return weights + self.config.kv_bytes

    def keep_alive_of(self, e: LoadedModel) -> float:
        """Seconds `e` stays loaded once idle; negative: until its room is needed."""
        return self.config.keep_alive_s if e.keep_alive_s is None else e.keep_alive_s

    def expires_at(self, e: LoadedModel) -> float | None:
        """When the keep-alive unloads `e` (Unix time), counted from its last use; None: never."""
        keep = self.keep_alive_of(e)
        if e.pinned or keep < 0:
            return None
        now = time.time()
        idle_since = now if e.inflight else now - (time.monotonic() - e.last_used)
        return idle_since + keep

    def set_keep_alive(self, ref: str, seconds: float | None) -> None:
        if (e := self._loaded.get(ref)) is not None:
            e.keep_alive_s = seconds
            self._wake_sweeper.set()

    def aliases_of(self, ref: str) -> list[str]:
        return sorted(a.name for a in self.store.aliases().values() if any(t.ref == ref for t in a.targets))

    def lookup(self, name: str) -> tuple[Manifest, list[str]]:
        """The version a request's `name` means now (one weighted draw for a split alias)."""
        ref = parse_ref(name)
        alias = self.store.aliases().get(ref.name) if ref.tag is None else None
        if alias is not None:
            targets = alias.targets
            pick = random.choices(targets, weights=[t.weight for t in targets])[0] if len(targets) > 1 else targets[0]
            loaded = self._loaded.get(pick.ref)
            return (loaded.manifest if loaded else self.store.find(pick.ref)), [alias.name]
        if ref.tag is not None and (loaded := self._loaded.get(str(ref))) is not None:
            return loaded.manifest, []
        return self.store.find(str(ref)), []

    # -- loading ------------------------------------------------------------------------
    async def acquire(self, m: Manifest, pin: bool = False, protect: frozenset[str] = frozenset()) -> LoadedModel:
        entry = self._loaded.get(m.ref)
        if entry is None:
            async with self._lock:
                entry = self._loaded.get(m.ref) or await self._load(m, protect)
        entry.last_used = time.monotonic()
        entry.pinned = entry.pinned or pin
        return entry

    async def _load(self, m: Manifest, protect: frozenset[str]) -> LoadedModel:
        need = self.estimate(m)
        budget = self.config.memory_budget_bytes
        if need > budget:
            raise ModelTooLarge(f"{m.ref} needs about {need >> 20} MiB (weights + KV); the memory budget is "
                                f"{budget >> 20} MiB (memory_budget_mb)")
        while self.used_bytes() + need > budget:
            victim = self._lru_idle(protect)
            if victim is None:
                raise NoRoom(f"{m.ref} needs about {need >> 20} MiB; the loaded models are busy "
                             f"({self.used_bytes() >> 20} of {budget >> 20} MiB in use)")
            log.info("unloading %s (least recently used) to make room for %s", victim.manifest.ref, m.ref)
            await self._unload(victim)
        self.events.publish("loading", m.ref, 0.0, f"about {need >> 20} MiB")
        started = time.monotonic()
        try:
            served = await self._load_fn(self.store.model_path(m), m)
        except Exception as exc:
            self.events.publish("failed", m.ref, message=str(exc)[:500])
            raise
        served.default_sampling = dict(m.sampling)
        entry = LoadedModel(m, served, need)
        if served.engine is not None:
            served.engine = TrackedEngine(served.engine, entry)  # type: ignore[assignment]
        self._loaded[m.ref] = entry
        self.events.publish("ready", m.ref, 1.0, f"loaded in {time.monotonic() - started:.1f} s")
        return entry

    def _lru_idle(self, protect: frozenset[str]) -> LoadedModel | None:
        now = time.monotonic()
        idle = [e for e in self._loaded.values() if e.inflight == 0 and not e.pinned
                and e.manifest.ref not in protect and now - e.last_used >= self.config.settle_s]
        return min(idle, key=lambda e: e.last_used, default=None)

    async def _unload(self, entry: LoadedModel) -> None:
        self._loaded.pop(entry.manifest.ref, None)
        engine = entry.served.engine
        if engine is not None:
            try:
                await engine.shutdown()
            except Exception:  # the model is gone from the catalog either way
                log.exception("engine shutdown failed for %s", entry.manifest.ref)
        self.events.publish("unloaded", entry.manifest.ref)

    async def unload(self, ref: str, force: bool = False) -> bool:
        """Unload `name@tag` now if idle (or `force`); False if it is busy."""
        entry = self._loaded.get(str(parse_ref(ref)))
        if entry is None:
            raise NotInStore(f"{ref} is not loaded")
        if entry.inflight and not force:
            return False
        async with self._lock:
            await self._unload(entry)
        return True

    def _expired(self, e: LoadedModel, now: float) -> bool:
        keep = self.keep_alive_of(e)
        idle = e.inflight == 0 and now - e.last_used >= self.config.settle_s
        return idle and (e.retiring or (not e.pinned and keep >= 0 and now - e.last_used > keep))

    async def sweep(self) -> None:
        """Unload models idle past their keep-alive, and retired ones whose requests have ended."""
        for e in list(self._loaded.values()):
            if self._expired(e, time.monotonic()):
                async with self._lock:
                    if self._loaded.get(e.manifest.ref) is e and self._expired(e, time.monotonic()):
                        await self._unload(e)  # checked again: a request may have come meanwhile

    def _sweep_period(self) -> float:
        keeps = [self.keep_alive_of(e) for e in self._loaded.values()] + [self.config.keep_alive_s]
        shortest = min((k for k in keeps if k >= 0), default=self.config.keep_alive_s)
        return max(0.2, min(5.0, shortest / 4))

    def start(self) -> None:
        async def loop() -> None:
            while True:
                self._wake_sweeper.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake_sweeper.wait(), self._sweep_period())
                try:
                    await self.sweep()
                except Exception:
                    log.exception("keep-alive sweep failed")

        self._sweeper = asyncio.create_task(loop())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for e in list(self._loaded.values()):
            await self._unload(e)

    # -- updates ------------------------------------------------------------------------
    async def canary(self, served: ServedModel) -> str:
        from jongleur.engine.types import EngineRequest, SamplingParams

        ids = served.tokenizer.encode(self.config.canary_prompt) or [0]
        request = EngineRequest(request_id=f"canary-{uuid.uuid4().hex[:12]}", prompt_token_ids=ids,
                                sampling=SamplingParams(max_tokens=4, temperature=0.0))
        assert served.engine is not None
        tokens: list[int] = []
        stream = served.engine.generate(request)
        try:
            async for out in stream:
                tokens.extend(out.new_token_ids)
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if not tokens:
            raise UpdateFailed(f"{served.name} produced no tokens for the canary prompt")
        return served.tokenizer.decode(tokens)

    async def update(self, alias: str, targets: list[AliasTarget]) -> dict[str, Any]:
        """Switch `alias` to `targets` with zero downtime (see the module docstring)."""
        async with self._update_lock:
            old = self.store.aliases().get(alias)
            old_refs = {t.ref for t in old.targets} if old else set()
            report: dict[str, Any] = {"alias": alias, "from": sorted(old_refs)}
            started = time.monotonic()
            fresh: list[str] = []
            try:
                manifests = [self.store.find(t.ref) for t in targets]
                for m in manifests:
                    self.events.publish("verifying", m.ref, message="checking the SHA-256 of its files")
                    await asyncio.to_thread(self.store.verify, m)
                for m in manifests:
                    if m.ref not in self._loaded:
                        fresh.append(m.ref)
                    entry = await self.acquire(m, protect=frozenset(old_refs))
                    self.events.publish("canary", m.ref, message="answering the canary prompt")
                    await asyncio.wait_for(self.canary(entry.served), timeout=120)
                targets = [AliasTarget(m.ref, t.weight) for m, t in zip(manifests, targets, strict=True)]
            except Exception as exc:
                for ref in fresh:  # the new version goes; the old one was never touched
                    if (entry := self._loaded.get(ref)) is not None and entry.inflight == 0:
                        async with self._lock:
                            await self._unload(entry)
                self.events.publish("failed", alias, message=f"update rejected: {str(exc)[:500]}")
                raise UpdateFailed(f"update of {alias!r} rejected, the current version keeps serving: "
                                   f"{exc}") from exc
            report["load_and_check_s"] = round(time.monotonic() - started, 3)
            self.store.set_alias(alias, targets)  # the switch: one atomic rename
            switched = time.monotonic()
            report["to"] = [t.ref for t in targets]
            self.events.publish("switched", alias, message="now " + ", ".join(report["to"]))
            report["drain"] = await self._retire(old_refs - {t.ref for t in targets})
            report["drain_s"] = round(time.monotonic() - switched, 3)
            return report

    async def rollback(self, alias: str) -> dict[str, Any]:
        current = self.store.aliases().get(alias)
        if current is None or not current.previous:
            raise UpdateFailed(f"the alias {alias!r} has no previous version to roll back to")
        return await self.update(alias, list(current.previous))

    async def _retire(self, refs: set[str]) -> dict[str, str]:
        """Wait until each old version has no request in flight, then unload it."""
        still_used = {t.ref for a in self.store.aliases().values() for t in a.targets}
        result: dict[str, str] = {}
        for ref in sorted(refs):
            entry = self._loaded.get(ref)
            if entry is None or ref in still_used or entry.pinned:
                result[ref] = "kept" if entry else "not loaded"
                continue
            entry.retiring = True
            self.events.publish("draining", ref, message=f"{entry.inflight} request(s) in flight")
            deadline = time.monotonic() + self.config.drain_timeout_s
            await asyncio.sleep(self.config.settle_s)  # requests that resolved it just before the switch
            while (entry.inflight or time.monotonic() - entry.last_used < self.config.settle_s) \
                    and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if entry.inflight:
                result[ref] = f"still busy after {self.config.drain_timeout_s:.0f} s; unloads when idle"
                continue
            drained = time.monotonic()
            async with self._lock:
                await self._unload(entry)
            log.info("%s drained in %.1f s, engine shut down in %.1f s", ref, drained - deadline +
                     self.config.drain_timeout_s, time.monotonic() - drained)
            result[ref] = "unloaded"
        return result
