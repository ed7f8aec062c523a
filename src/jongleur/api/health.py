"""`GET /health` (the process is alive), `GET /ready` (models loaded, engines alive, not draining),
`GET /metrics` (Prometheus text). All three are public and answer while draining."""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from jongleur.api.errors import APIError, error_response
from jongleur.api.lifecycle import Lifecycle
from jongleur.api.metrics import Metrics
from jongleur.api.model_registry import ModelRegistry

router = APIRouter(tags=["system"])
log = logging.getLogger("jongleur.api")
STATS_TIMEOUT_S = 2.0  # an engine busy in a long step answers late: keep the last figures


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> Response:
    lifecycle: Lifecycle = request.app.state.lifecycle
    registry: ModelRegistry = request.app.state.registry
    if lifecycle.draining:
        return error_response(APIError(503, "the server is shutting down", code="draining"))
    if lifecycle.load_error is not None:
        return error_response(APIError(503, f"model loading failed: {lifecycle.load_error}",
                                       code="model_load_failed"))
    if not lifecycle.loaded:
        return error_response(APIError(503, "models are loading", code="loading", headers={"Retry-After": "2"}))
    dead = [m.name for m in registry.models() if m.engine is not None and not m.engine.is_alive()]
    if dead:
        return error_response(APIError(503, f"engine not alive for {', '.join(dead)}", code="engine_unavailable"))
    return JSONResponse({"status": "ready", "models": [m.name for m in registry.models()]})


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    m: Metrics = request.app.state.metrics
    registry: ModelRegistry = request.app.state.registry
    lifecycle: Lifecycle = request.app.state.lifecycle
    m.inflight.set(lifecycle.inflight)
    for served in registry.models():
        if served.engine is not None and served.engine.is_alive():
            try:
                m.set_engine_stats(served.name, await asyncio.wait_for(served.engine.stats(), STATS_TIMEOUT_S))
            except Exception:  # noqa: BLE001 - a scrape must not fail because one engine is dying
                log.debug("engine stats unavailable for %s", served.name)
    return Response(m.render(), media_type=CONTENT_TYPE_LATEST)
