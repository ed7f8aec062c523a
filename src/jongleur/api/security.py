"""Who is calling: the `Principal` dependency (the seam the tenancy issue fills in).

Today: if API keys are configured, every protected route needs `Authorization: Bearer <key>`
(compared in constant time); without keys (allowed on loopback only) everyone is the local user.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from jongleur.api.errors import APIError
from jongleur.engine.types import Priority


@dataclass(frozen=True)
class Principal:
    """The authenticated caller. `tenant` feeds engine fair share and prefix-cache salting."""

    id: str
    tenant: str = "default"
    max_priority: Priority = Priority.HIGH
    authenticated: bool = False


LOCAL = Principal(id="local")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class KeyChecker:
    def __init__(self, keys: list[str]) -> None:
        self._digests = [(_digest(k), f"key-{i}") for i, k in enumerate(keys)]

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def check(self, presented: str | None) -> Principal:
        if not self.enabled:
            return LOCAL
        if presented:
            d = _digest(presented)
            match = None
            for digest, ident in self._digests:
                if hmac.compare_digest(d, digest):
                    match = ident
            if match is not None:
                return Principal(id=match, authenticated=True)
        raise APIError(401, "invalid or missing API key", code="invalid_api_key",
                       headers={"WWW-Authenticate": "Bearer"})


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


async def get_principal(request: Request) -> Principal:
    checker: KeyChecker = request.app.state.key_checker
    return checker.check(bearer_token(request))


PrincipalDep = Annotated[Principal, Depends(get_principal)]
