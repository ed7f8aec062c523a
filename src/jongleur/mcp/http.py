"""Streamable HTTP at `/mcp` inside the FastAPI app: authentication and Origin checks in front of
the SDK's transport, and its session manager run in the app's lifespan.

Every HTTP request to `/mcp` is authenticated on its own (bearer API key, the same principals as
the REST API, through `api.security.get_principal`); MCP session ids are not credentials. The
server runs stateless (JSON responses, no server-held sessions), so nothing outlives a request.
A browser `Origin` must be one of `cors_origins` or the server's own loopback origin, else 403
(DNS rebinding and cross-site requests). The Host header is checked by the app's guard middleware.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from jongleur.mcp.backend import PRINCIPAL_KEY, LocalBackend
from jongleur.mcp.server import build_server

LOOPBACK_ORIGIN_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def origin_allowed(origin: str, settings: Any) -> bool:
    if origin in set(getattr(settings, "cors_origins", []) or []):
        return True
    scheme, _, rest = origin.partition("://")
    host = rest.rsplit(":", 1)[0] if rest.count(":") == 1 or rest.startswith("[") and "]:" in rest else rest
    port = rest.rsplit(":", 1)[1] if ":" in rest.replace("[::1]", "") else ""
    return (scheme == "http" and host in LOOPBACK_ORIGIN_HOSTS and settings.is_loopback
            and port == str(settings.port))


async def _reject(send: Send, status: int, code: str, message: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                 "code": code}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


class MCPAuthApp:
    """ASGI: Origin check, then authentication, then the SDK's streamable-HTTP handler."""

    jongleur_protected = True  # checks keys itself (see api/admin/classify.py)

    def __init__(self, app: FastAPI, inner: ASGIApp) -> None:
        self.app = app
        self.inner = inner

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from jongleur.api.errors import APIError
        from jongleur.api.security import get_principal

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin = headers.get("origin")
        if origin is not None and not origin_allowed(origin, self.app.state.settings):
            await _reject(send, 403, "invalid_origin", "origin not allowed")
            return
        request = Request(scope, receive)
        try:
            principal = await get_principal(request)
        except APIError as exc:
            await _reject(send, exc.status, exc.code or "invalid_api_key", exc.message,
                          [(b"www-authenticate", b"Bearer")] if exc.status == 401 else [])
            return
        scope[PRINCIPAL_KEY] = principal
        await self.inner(scope, receive, send)


def install_mcp(app: FastAPI) -> None:
    """Serve MCP at exactly `/mcp` (no redirect to `/mcp/`) and run its session manager with the app."""
    from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
    from mcp.server.transport_security import TransportSecuritySettings

    server = build_server(LocalBackend(app))
    server.streamable_http_app(  # builds the session manager; we route to it ourselves
        streamable_http_path="/mcp", stateless_http=True, json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False))
    endpoint = StreamableHTTPASGIApp(server.session_manager)
    app.router.routes.append(Route("/mcp", MCPAuthApp(app, endpoint), methods=["GET", "POST", "DELETE"]))
    app.state.mcp_server = server
    inner_lifespan = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: Any) -> AsyncIterator[Any]:
        async with server.session_manager.run(), inner_lifespan(a) as state:
            yield state

    app.router.lifespan_context = lifespan
