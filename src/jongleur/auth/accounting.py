"""Per-HTTP-request accounting: who called, what it reserved and used, what the guardrails found.

`AccountingMiddleware` (pure ASGI, so it spans streamed bodies) opens a `RequestAccount` for every
request and, when the request ends, settles its reservations and writes one usage record for each
inference request. The API's generation code reaches the account through `current()` and the hooks
below; outside a request (unit tests, internal calls) they do nothing.
"""

from __future__ import annotations

import logging
import time
import uuid
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jongleur.auth.limits import Limiter, Reservation
from jongleur.auth.principal import Level, Principal
from jongleur.guard import Finding, GuardPolicy, default_policy
from jongleur.guard.policy import LOCAL_POLICY
from jongleur.store import StoreUnavailable

log = logging.getLogger("jongleur.auth")

INFERENCE_PATHS = frozenset({
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings",
    "/api/chat", "/api/generate", "/api/embed", "/api/embeddings",
})


@dataclass
class RequestAccount:
    route: str
    started: float = field(default_factory=time.monotonic)
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    principal: Principal | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reserved: list[Reservation] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    status: int = 500
    model_levels: dict[str, Level] = field(default_factory=dict)

    @property
    def guard_policy(self) -> GuardPolicy:
        p = self.principal
        if p is None or not p.authenticated:
            return LOCAL_POLICY
        return p.policy.guard or default_policy(p.clearance)


_current: ContextVar[RequestAccount | None] = ContextVar("jongleur_request_account", default=None)


def current() -> RequestAccount | None:
    return _current.get()


def current_principal() -> Principal | None:
    account = _current.get()
    return account.principal if account is not None else None


class AccountingMiddleware:
    def __init__(self, app: ASGIApp, *, limiter: Limiter, directory: Any,
                 model_levels: dict[str, Level] | None = None) -> None:
        self.app = app
        self.model_levels = model_levels or {}
        self.limiter = limiter
        self.directory = directory

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        account = RequestAccount(route=scope.get("path", ""), model_levels=self.model_levels)
        token = _current.set(account)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                account.status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            _current.reset(token)
            await self._finish(account)

    async def _finish(self, account: RequestAccount) -> None:
        p = account.principal
        if p is None:
            return
        actual = account.prompt_tokens + account.completion_tokens
        for res in account.reserved:  # actual tokens fill the reservations in order; the rest is given back
            used = min(actual, res.tokens)
            self.limiter.settle(p, res, used)
            actual -= used
        if account.route not in INFERENCE_PATHS and not account.reserved:
            return
        rec = {"ts": time.time(), "request_id": account.request_id, "key_id": p.id, "tenant_id": p.tenant,
               "user_id": p.user, "route": account.route[:100], "model": account.model, "status": account.status,
               "prompt_tokens": account.prompt_tokens, "completion_tokens": account.completion_tokens,
               "latency_ms": round((time.monotonic() - account.started) * 1000, 2),
               "findings": [f.to_dict() for f in account.findings]}
        try:  # the response has been sent: this only delays the end of the ASGI call
            await self.directory.db.run(self.directory.record_usage, rec)
        except StoreUnavailable:
            log.warning("usage record dropped: store unavailable (request %s)", account.request_id)
        except Exception:
            log.exception("usage record failed (request %s)", account.request_id)
