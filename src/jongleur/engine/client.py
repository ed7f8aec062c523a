"""Async engine clients. `InProcessEngineClient` runs the engine loop in a thread (tests);
`ProcessEngineClient` (process_client.py) runs it in its own process (default). Both share the
routing here: one asyncio queue per request, outputs dispatched from a reader thread.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from collections.abc import AsyncIterator
from typing import Any

from jongleur.engine.builder import EngineSpec, build_engine
from jongleur.engine.errors import EngineDeadError, EngineError
from jongleur.engine.loop import run_engine_loop
from jongleur.engine.messages import (
    AbortRequest,
    AddRequest,
    AddResult,
    Fatal,
    Query,
    QueryResult,
    Ready,
    Shutdown,
    StepOutputs,
)
from jongleur.engine.protocol import EngineInfo
from jongleur.engine.types import EngineOutput, EngineRequest, EngineStats

log = logging.getLogger("jongleur.engine")


class AsyncEngineClientBase:
    """Routing of outputs to per-request streams. Subclasses provide the transport."""

    def __init__(self) -> None:
        self._info: EngineInfo | None = None
        self._streams: dict[str, asyncio.Queue[EngineOutput | BaseException]] = {}
        self._adds: dict[str, asyncio.Future[None]] = {}
        self._queries: dict[int, asyncio.Future[Any]] = {}
        self._query_ids = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dead: EngineDeadError | None = None
        self._reader: threading.Thread | None = None
        self._closing = False

    # transport, provided by subclasses
    def _send(self, message: object) -> None:
        raise NotImplementedError

    def _receive(self, timeout: float) -> object | None:
        """One message from the engine, None on time-out. Raises EOFError when the engine is gone."""
        raise NotImplementedError

    @property
    def info(self) -> EngineInfo:
        if self._info is None:
            raise EngineError("the engine has not started")
        return self._info

    def is_alive(self) -> bool:
        return self._info is not None and self._dead is None

    # ---- reader thread -------------------------------------------------------------------
    def _start_reader(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._reader = threading.Thread(target=self._read_forever, name="engine-reader", daemon=True)
        self._reader.start()

    def _read_forever(self) -> None:
        assert self._loop is not None
        while not self._closing:
            try:
                message = self._receive(0.25)
            except (EOFError, OSError):
                message = Fatal(error=None)  # type: ignore[arg-type]
            if message is None:
                continue
            if self._loop.is_closed():
                return
            self._loop.call_soon_threadsafe(self._dispatch, message)
            if isinstance(message, Fatal):
                return

    def _dispatch(self, message: object) -> None:
        if isinstance(message, StepOutputs):
            for output in message.outputs:
                stream = self._streams.get(output.request_id)
                if stream is not None:
                    stream.put_nowait(output)
        elif isinstance(message, AddResult):
            future = self._adds.pop(message.request_id, None)
            if future is not None and not future.done():
                if message.error is None:
                    future.set_result(None)
                else:
                    future.set_exception(message.error.to_exception())
        elif isinstance(message, QueryResult):
            future = self._queries.pop(message.query_id, None)
            if future is not None and not future.done():
                if message.error is None:
                    future.set_result(message.value)
                else:
                    future.set_exception(message.error.to_exception())
        elif isinstance(message, Fatal):
            self._fail_all(message)

    def _fail_all(self, message: Fatal) -> None:
        reason = message.error.message if message.error is not None else "the engine process exited"
        self._dead = EngineDeadError(f"the engine stopped: {reason}")
        for future in [*self._adds.values(), *self._queries.values()]:
            if not future.done():
                future.set_exception(self._dead)
        for stream in self._streams.values():
            stream.put_nowait(self._dead)
        self._adds.clear()
        self._queries.clear()

    # ---- API -------------------------------------------------------------------------------
    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        if self._dead is not None:
            raise self._dead
        loop = asyncio.get_running_loop()
        rid = request.request_id
        if rid in self._streams:
            raise EngineError(f"request id {rid!r} is already in flight")
        stream: asyncio.Queue[EngineOutput | BaseException] = asyncio.Queue()
        admitted: asyncio.Future[None] = loop.create_future()
        self._streams[rid] = stream
        self._adds[rid] = admitted
        remaining = request.sampling.n
        try:
            self._send(AddRequest(request))
            await admitted
            while remaining:
                item = await stream.get()
                if isinstance(item, BaseException):
                    raise item
                if item.finished:
                    remaining -= 1
                yield item
        finally:
            self._streams.pop(rid, None)
            self._adds.pop(rid, None)
            if remaining and self._dead is None:
                self._send(AbortRequest(rid))

    async def abort(self, request_id: str) -> None:
        if self._dead is None:
            self._send(AbortRequest(request_id))

    async def _query(self, what: str) -> Any:
        if self._dead is not None:
            raise self._dead
        query_id = next(self._query_ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queries[query_id] = future
        self._send(Query(query_id, what))
        return await asyncio.wait_for(future, timeout=30)

    async def stats(self) -> EngineStats:
        stats: EngineStats = await self._query("stats")
        return stats

    async def check_integrity(self) -> None:
        await self._query("integrity")


class InProcessEngineClient(AsyncEngineClientBase):
    """The engine loop in a thread of this process. Same behaviour as the process client."""

    def __init__(self, spec: EngineSpec) -> None:
        super().__init__()
        self.spec = spec
        self._inbox: queue.Queue[object] = queue.Queue()
        self._outbox: queue.Queue[object] = queue.Queue()
        self._thread: threading.Thread | None = None

    def _send(self, message: object) -> None:
        self._inbox.put(message)

    def _receive(self, timeout: float) -> object | None:
        try:
            return self._outbox.get(timeout=timeout)
        except queue.Empty:
            return None

    async def start(self) -> None:
        core, info = await asyncio.to_thread(build_engine, self.spec)
        self._info = info
        self._start_reader()
        self._thread = threading.Thread(
            target=run_engine_loop, args=(core, self._inbox, self._outbox), name="engine-loop", daemon=True
        )
        self._thread.start()

    async def shutdown(self) -> None:
        self._send(Shutdown())
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        self._closing = True
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 2)


__all__ = ["AsyncEngineClientBase", "InProcessEngineClient", "Ready"]
