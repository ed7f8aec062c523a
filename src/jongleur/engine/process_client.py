"""`ProcessEngineClient`: the engine loop in its own process (the default).

The HTTP event loop never waits on a forward pass or on Python scheduling work. Messages cross
as pickled dataclasses over multiprocessing queues. If the process dies, every in-flight request
ends with `EngineDeadError`, `is_alive()` turns False, and `restart()` starts a fresh process.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import os
import queue
import time
from typing import Any

from jongleur.engine.builder import EngineSpec, build_engine
from jongleur.engine.client import AsyncEngineClientBase
from jongleur.engine.errors import EngineError
from jongleur.engine.loop import run_engine_loop
from jongleur.engine.messages import Fatal, Ready, Shutdown, WireError

log = logging.getLogger("jongleur.engine")


def _engine_process_main(spec: EngineSpec, inbox: Any, outbox: Any) -> None:
    try:
        core, info = build_engine(spec)
    except Exception as exc:
        log.exception("engine failed to start")
        outbox.put(Fatal(WireError(type(exc).__name__, f"the model could not be loaded: {exc}")))
        return
    outbox.put(Ready(info))
    parent = os.getppid()
    run_engine_loop(core, inbox, outbox, should_stop=lambda: os.getppid() != parent)


class ProcessEngineClient(AsyncEngineClientBase):
    def __init__(self, spec: EngineSpec, start_timeout_s: float = 900.0) -> None:
        super().__init__()
        self.spec = spec
        self.start_timeout_s = start_timeout_s
        self._ctx = mp.get_context("spawn")
        self._process: Any = None
        self._inbox: Any = None
        self._outbox: Any = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _send(self, message: object) -> None:
        self._inbox.put(message)

    def _receive(self, timeout: float) -> object | None:
        try:
            return self._outbox.get(timeout=timeout)
        except queue.Empty:
            if not self._process.is_alive():
                raise EOFError("engine process exited") from None
            return None

    def _wait_ready(self) -> Ready:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            try:
                message = self._outbox.get(timeout=0.5)
            except queue.Empty:
                if not self._process.is_alive():
                    raise EngineError(f"the engine process exited during start (code {self._process.exitcode})") from None
                continue
            if isinstance(message, Ready):
                return message
            if isinstance(message, Fatal):
                raise message.error.to_exception()
        raise EngineError(f"the engine did not start within {self.start_timeout_s:.0f}s")

    async def start(self) -> None:
        self._inbox = self._ctx.Queue()
        self._outbox = self._ctx.Queue()
        self._process = self._ctx.Process(
            target=_engine_process_main, args=(self.spec, self._inbox, self._outbox), name="jongleur-engine", daemon=True
        )
        self._process.start()
        try:
            ready = await asyncio.to_thread(self._wait_ready)
        except BaseException:
            self._process.kill()
            raise
        self._info = ready.info
        self._dead = None
        self._closing = False
        self._start_reader()

    async def restart(self) -> None:
        """Start a fresh engine process after the previous one died."""
        await self.shutdown()
        await self.start()

    async def shutdown(self) -> None:
        self._closing = True
        if self._process is not None and self._process.is_alive():
            try:
                self._send(Shutdown())
            except (OSError, ValueError):
                pass
            await asyncio.to_thread(self._process.join, 10)
            if self._process.is_alive():
                self._process.kill()
                await asyncio.to_thread(self._process.join, 5)
        if self._reader is not None:
            await asyncio.to_thread(self._reader.join, 2)
            self._reader = None
