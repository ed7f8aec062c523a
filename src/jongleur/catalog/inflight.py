"""In-flight counting around an engine: the manager never unloads a model under running requests."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from jongleur.engine.types import EngineOutput, EngineRequest


class Usage(Protocol):
    inflight: int
    last_used: float


class _CountedStream:
    """Counts one request from `generate()` until its stream ends, is closed, or is dropped."""

    def __init__(self, inner: AsyncIterator[EngineOutput], usage: Usage) -> None:
        self._inner = inner
        self._usage = usage
        self._open = True

    def _done(self) -> None:
        if self._open:
            self._open = False
            self._usage.inflight -= 1
            self._usage.last_used = time.monotonic()

    def __aiter__(self) -> _CountedStream:
        return self

    async def __anext__(self) -> EngineOutput:
        try:
            return await self._inner.__anext__()
        except BaseException:
            self._done()
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()  # type: ignore[attr-defined]
        finally:
            self._done()

    def __del__(self) -> None:  # a stream never started and never closed
        self._done()


class TrackedEngine:
    """An `EngineClient` that counts in-flight requests into `usage`; everything else delegates."""

    def __init__(self, inner: Any, usage: Usage) -> None:
        self.inner = inner
        self._usage = usage

    def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        self._usage.inflight += 1
        self._usage.last_used = time.monotonic()
        return _CountedStream(self.inner.generate(request), self._usage)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)
