"""Run the app under uvicorn with jongleur's shutdown: SIGTERM drains instead of cutting streams.

First SIGTERM/SIGINT: readiness turns 503, new requests get 503, in-flight requests finish (up to
`drain_grace_s`); then uvicorn shuts down and the process exits 0. A second signal exits at once.
"""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from jongleur.api.app import ModelLoader, create_app
from jongleur.api.http_protocol import MAX_HEADER_BYTES, StatusHintH11Protocol
from jongleur.api.lifecycle import Lifecycle
from jongleur.api.loading import make_loader
from jongleur.api.model_registry import ModelRegistry
from jongleur.config import Settings

log = logging.getLogger("jongleur.api")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, lifecycle: Lifecycle) -> None:
        super().__init__(config)
        self.lifecycle = lifecycle

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.lifecycle.draining or sig not in (signal.SIGTERM, signal.SIGINT):
            self.force_exit = self.lifecycle.draining
            self.should_exit = True
            return
        log.info("signal %s: draining (grace %.0fs, %d in flight)", sig, self.lifecycle.grace_s,
                 self.lifecycle.inflight)
        self.lifecycle.begin_drain()

    async def on_tick(self, counter: int) -> bool:
        if self.lifecycle.drain_finished():
            self.should_exit = True
        return await super().on_tick(counter)


def serve(settings: Settings, registry: ModelRegistry | None = None, loader: ModelLoader | None = None) -> None:
    """Serve until SIGTERM. `registry`/`loader` default to loading the configured models."""
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lifecycle = Lifecycle(settings.drain_grace_s)
    if registry is None and loader is None:
        loader = make_loader(settings)
    registry = registry or ModelRegistry()
    if settings.catalog and registry.catalog is None:
        from jongleur.catalog.setup import build_catalog

        registry.catalog = build_catalog(settings)  # the model store: aliases, versions, hot swap
    app = create_app(settings, registry, loader, lifecycle=lifecycle)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level=settings.log_level, lifespan="on",
        timeout_graceful_shutdown=2, timeout_keep_alive=5, http=StatusHintH11Protocol,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        server_header=False,
    )
    DrainingServer(config, lifecycle).run()
