"""Server lifecycle: loading -> ready -> draining. Shared by `/ready`, the middleware and `serve`.

On SIGTERM `serve` calls `begin_drain()`: readiness turns 503, new requests are refused with 503,
in-flight requests run on until they end or `grace_s` passes; then the server exits (code 0).
"""

from __future__ import annotations

import time


class Lifecycle:
    def __init__(self, grace_s: float = 30.0) -> None:
        self.grace_s = grace_s
        self.loaded = False
        self.load_error: str | None = None
        self.draining = False
        self.drain_started: float | None = None
        self.inflight = 0

    def begin_drain(self) -> None:
        if not self.draining:
            self.draining = True
            self.drain_started = time.monotonic()

    def drain_finished(self) -> bool:
        """True once draining and either nothing is in flight or the grace has run out."""
        if not self.draining or self.drain_started is None:
            return False
        return self.inflight == 0 or time.monotonic() - self.drain_started >= self.grace_s

    @property
    def ready(self) -> bool:
        return self.loaded and not self.draining and self.load_error is None
