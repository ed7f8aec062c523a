"""The engine loop: drain client messages, step the core while it has work, publish outputs.

The same function runs in a thread (in-process client) or as the body of the engine process.
`inbox`/`outbox` are `queue.Queue` or `multiprocessing` queues: only `get`/`get_nowait`/`put`
are used.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from typing import Any

from jongleur.engine.core import EngineCore
from jongleur.engine.errors import EngineError
from jongleur.engine.messages import (
    AbortRequest,
    AddRequest,
    AddResult,
    Fatal,
    Query,
    QueryResult,
    Shutdown,
    StepOutputs,
    WireError,
)

log = logging.getLogger("jongleur.engine")
IDLE_POLL_S = 0.5


def _drain(inbox: Any, block: bool) -> list[object]:
    messages: list[object] = []
    try:
        messages.append(inbox.get(timeout=IDLE_POLL_S) if block else inbox.get_nowait())
        while True:
            messages.append(inbox.get_nowait())
    except queue.Empty:
        pass
    return messages


def _handle(core: EngineCore, message: object, outbox: Any) -> bool:
    """Apply one message; return False on shutdown."""
    if isinstance(message, AddRequest):
        try:
            core.add_request(message.request)
            outbox.put(AddResult(message.request.request_id, None))
        except EngineError as exc:
            outbox.put(AddResult(message.request.request_id, WireError.of(exc)))
    elif isinstance(message, AbortRequest):
        outputs = core.abort(message.request_id)
        if outputs:
            outbox.put(StepOutputs(outputs))
    elif isinstance(message, Query):
        try:
            if message.what == "stats":
                value: object = core.stats()
            elif message.what == "integrity":
                core.check_integrity()
                value = True
            else:
                raise EngineError(f"unknown query {message.what!r}")
            outbox.put(QueryResult(message.query_id, value))
        except Exception as exc:  # noqa: BLE001 - an integrity failure is reported, not fatal
            outbox.put(QueryResult(message.query_id, None, WireError(type(exc).__name__, str(exc))))
    elif isinstance(message, Shutdown):
        return False
    return True


def run_engine_loop(core: EngineCore, inbox: Any, outbox: Any, should_stop: Callable[[], bool] = lambda: False) -> None:
    try:
        while not should_stop():
            for message in _drain(inbox, block=not core.has_work()):
                if not _handle(core, message, outbox):
                    return
            if core.has_work():
                outputs = core.step()
                if outputs:
                    outbox.put(StepOutputs(outputs))
    except Exception as exc:
        log.exception("engine loop failed")
        outbox.put(Fatal(WireError.of(exc)))
