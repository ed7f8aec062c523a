"""The app factory: `create_app(settings, registry, loader)` builds the whole HTTP surface.

`loader` (optional) fills the registry at start-up, in the background: `/health` answers at
once, `/ready` is 503 until it has finished. On shutdown every engine is shut down.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from jongleur import __version__
from jongleur.api import admin_models, health
from jongleur.api.admin import routes as admin_routes
from jongleur.api.admin.classify import check_routes
from jongleur.api.errors import install_error_handlers
from jongleur.api.lifecycle import Lifecycle
from jongleur.api.mcp import router as mcp_admin_router
from jongleur.api.metrics import Metrics
from jongleur.api.middleware import LOOPBACK_HOSTS, GuardMiddleware
from jongleur.api.model_registry import ModelRegistry
from jongleur.api.ollama import serving as ollama_serving
from jongleur.api.openai import router as openai_router
from jongleur.api.rag import router as rag_router
from jongleur.auth.accounting import AccountingMiddleware
from jongleur.auth.setup import build_auth
from jongleur.config import Settings
from jongleur.mcp.http import install_mcp

log = logging.getLogger("jongleur.api")

ModelLoader = Callable[[ModelRegistry], Awaitable[None]]


def _allowed_hosts(settings: Settings) -> frozenset[str] | None:
    if "*" in settings.allowed_hosts:
        return None
    extra = {h.lower() for h in settings.allowed_hosts}
    if settings.is_loopback:
        return LOOPBACK_HOSTS | extra
    return frozenset(extra) if extra else None  # off loopback the API key is the protection


def create_app(
    settings: Settings,
    registry: ModelRegistry | None = None,
    loader: ModelLoader | None = None,
    lifecycle: Lifecycle | None = None,
) -> FastAPI:
    registry = registry if registry is not None else ModelRegistry()
    lifecycle = lifecycle or Lifecycle(settings.drain_grace_s)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task: asyncio.Task[None] | None = None
        if registry.catalog is not None:
            registry.catalog.start()  # keep-alive sweeper
        if loader is None:
            lifecycle.loaded = True
        else:
            async def load() -> None:
                try:
                    await loader(registry)
                    for alias, target in settings.aliases.items():
                        registry.add_alias(alias, target)
                    lifecycle.loaded = True
                    log.info("ready: %s", ", ".join(m.name for m in registry.models()))
                except Exception as exc:  # reported by /ready; the server stays up to say why
                    log.exception("model loading failed")
                    lifecycle.load_error = str(exc) or type(exc).__name__

            task = asyncio.create_task(load())
        try:
            yield
        finally:
            if task is not None and not task.done():
                task.cancel()
            if registry.catalog is not None:
                await registry.catalog.close()
            if (mcp_tools := getattr(app.state, "mcp_tools", None)) is not None:
                await mcp_tools.aclose()  # external MCP sessions; stdio servers exit
            for served in registry.models():
                if served.engine is not None:
                    try:
                        await served.engine.shutdown()
                    except Exception:
                        log.exception("engine shutdown failed for %s", served.name)

    app = FastAPI(title="jongleur", version=__version__, lifespan=lifespan,
                  docs_url="/docs", redoc_url=None)
    app.state.settings = settings
    app.state.registry = registry
    app.state.lifecycle = lifecycle
    app.state.metrics = metrics
    auth = build_auth(settings)
    app.state.auth = auth.service
    app.state.limiter = auth.limiter
    install_error_handlers(app)

    app.include_router(health.router)
    app.include_router(openai_router.router)
    app.include_router(ollama_serving.router)
    app.include_router(ollama_serving.public_router)
    app.include_router(admin_routes.admin_router)
    app.include_router(admin_routes.self_router)
    app.include_router(rag_router.router)
    app.include_router(mcp_admin_router.router)
    app.include_router(admin_models.router)
    install_mcp(app)  # /mcp: the MCP server over streamable HTTP (jongleur.mcp.http)

    check_routes(app)
    app.add_middleware(AccountingMiddleware, limiter=auth.limiter, directory=auth.directory,
                       model_levels=auth.model_levels)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.cors_origins),
                           allow_methods=["GET", "POST", "OPTIONS"],
                           allow_headers=["authorization", "content-type"])
    app.add_middleware(GuardMiddleware, lifecycle=lifecycle, metrics=metrics,
                       max_body=settings.max_request_body_bytes, allowed_hosts=_allowed_hosts(settings))
    return app
