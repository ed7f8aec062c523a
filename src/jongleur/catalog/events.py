"""Progress events of the catalog: loads, unloads and update steps, for the logs and for subscribers.

`GET /admin/catalog/events` streams them as Server-Sent Events (the console and `jongleur models
update` follow them). A load publishes `loading` (fraction 0) then `ready` (fraction 1) or
`failed`; an update adds `verifying`, `canary`, `switched` and `draining`; `unloaded` ends a model's
time in memory; a pull through the admin API sends `pulling` (fraction of each file) then `pulled`.
A slow subscriber loses its oldest events, never blocks a load.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

log = logging.getLogger("jongleur.catalog")

QUEUE_SIZE = 256


@dataclass(frozen=True)
class CatalogEvent:
    event: str  # loading | ready | failed | unloaded | verifying | canary | switched | draining | pulling | pulled
    ref: str  # name@tag; the alias for `switched`; the hub spec (repo:file) while pulling
    fraction: float | None = None  # progress of a load, where known
    message: str = ""
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class CatalogEvents:
    """Fan-out of `CatalogEvent`s to bounded subscriber queues (all on the server's event loop)."""

    def __init__(self) -> None:
        self._subscribers: set[asyncio.Queue[CatalogEvent]] = set()

    def publish(self, event: str, ref: str, fraction: float | None = None, message: str = "") -> None:
        item = CatalogEvent(event, ref, fraction, message)
        level = logging.WARNING if event == "failed" else logging.INFO
        log.log(level, "model %s: %s%s%s", ref, event, f" {fraction:.0%}" if fraction is not None else "",
                f" ({message})" if message else "")
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # drop the oldest: a slow reader must not hold up loads
            queue.put_nowait(item)

    @contextlib.contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[CatalogEvent]]:
        queue: asyncio.Queue[CatalogEvent] = asyncio.Queue(QUEUE_SIZE)
        self._subscribers.add(queue)
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)

    def subscriber_count(self) -> int:
        return len(self._subscribers)


PULL_STEP = 0.05  # a `pulling` event per 5 % of a file at most


def pull_progress(events: CatalogEvents, spec: str,
                  loop: asyncio.AbstractEventLoop) -> Callable[[str, int, int], None]:
    """A `HubClient.on_progress` that publishes `pulling` events from the download thread."""
    reported: dict[str, float] = {}

    def report(file: str, done: int, total: int) -> None:
        fraction = min(1.0, done / total) if total else None
        last = reported.get(file)
        if last is not None and (fraction is None or (fraction < 1.0 and fraction - last < PULL_STEP)):
            return
        reported[file] = fraction or 0.0
        loop.call_soon_threadsafe(events.publish, "pulling", spec, fraction, file)

    return report
