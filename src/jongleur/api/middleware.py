"""One pure-ASGI guard in front of every route: Host check, draining, body size, request metrics.

- Host: on loopback only loopback names (plus `allowed_hosts`) are accepted, so a web page on a
  rebinding DNS name cannot reach the server from a browser (403).
- Draining: after SIGTERM new requests get 503 (health, ready and metrics still answer).
- Body: buffered up to `max_request_body_bytes`; beyond it 413 at once (by Content-Length) or as
  soon as the stream passes it. Handlers then read the buffered body; later `receive()` calls go to
  the client, so disconnects are still seen.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jongleur.api.errors import APIError, error_payload, is_ollama_path
from jongleur.api.lifecycle import Lifecycle
from jongleur.api.metrics import Metrics

LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
ALWAYS_OPEN = frozenset({"/health", "/ready", "/metrics"})


def _host_name(host_header: str) -> str:
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class GuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        lifecycle: Lifecycle,
        metrics: Metrics,
        max_body: int,
        allowed_hosts: frozenset[str] | None,
    ) -> None:
        self.app = app
        self.lifecycle = lifecycle
        self.metrics = metrics
        self.max_body = max_body
        self.allowed_hosts = allowed_hosts  # None: no check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.allowed_hosts is not None:
            host = _host_name(headers.get("host", ""))
            if host not in self.allowed_hosts:
                await self._reject(send, path, APIError(403, "host not allowed", code="invalid_host"))
                return
        if path in ALWAYS_OPEN:
            await self.app(scope, receive, send)
            return
        if self.lifecycle.draining:
            await self._reject(send, path, APIError(503, "the server is shutting down", code="draining",
                                                    headers={"Retry-After": "5"}))
            return
        start = time.monotonic()
        status_box = {"status": 500}
        self.lifecycle.inflight += 1
        try:
            receive = await self._buffer_body(scope, receive, send, headers, path)
            if receive is None:
                status_box["status"] = 413
                return

            async def send_wrapper(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status_box["status"] = message["status"]
                await send(message)

            await self.app(scope, receive, send_wrapper)
        finally:
            self.lifecycle.inflight -= 1
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            self.metrics.observe_request(label, status_box["status"], time.monotonic() - start)

    async def _buffer_body(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], path: str
    ) -> Receive | None:
        too_large = APIError(413, f"request body larger than {self.max_body} bytes", code="body_too_large")
        length = headers.get("content-length")
        if length is not None:
            try:
                if int(length) > self.max_body:
                    await self._reject(send, path, too_large)
                    return None
            except ValueError:
                await self._reject(send, path, APIError(400, "invalid Content-Length header"))
                return None
        if scope.get("method") in ("GET", "HEAD", "DELETE", "OPTIONS") and length is None:
            return receive
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                replay: list[Message] = [message]
                break
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_body:
                await self._reject(send, path, too_large)
                return None
            chunks.append(body)
            if not message.get("more_body", False):
                replay = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
                break

        async def replay_receive() -> Message:
            if replay:
                return replay.pop(0)
            return await receive()

        return replay_receive

    async def _reject(self, send: Send, path: str, err: APIError) -> None:
        import json

        body = json.dumps(error_payload(err, ollama=is_ollama_path(path))).encode()
        headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
        if err.status == 413:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": err.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
