"""The FastAPI dependencies: `PrincipalDep` (any valid caller), `AdminDep` (role admin, else 403).

`get_principal` authenticates, records the principal on the request's account, counts the
inference request against the key's RPM and loads its quota counters.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from jongleur.auth import accounting
from jongleur.auth.errors import auth_unavailable, forbidden
from jongleur.auth.principal import Principal
from jongleur.store import StoreUnavailable


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return request.headers.get("x-api-key") or None


async def get_principal(request: Request) -> Principal:
    account = accounting.current()
    if account is not None and account.principal is not None:
        return account.principal  # already resolved for this request (router + route dependency)
    state = request.app.state
    principal = await state.auth.authenticate(bearer_token(request))
    if account is not None:
        account.principal = principal
    if principal.authenticated:
        if account is not None and account.route in accounting.INFERENCE_PATHS:
            state.limiter.hit(principal)  # RPM counts inference requests (not /v1/usage, /v1/models...)
        directory = state.auth.directory

        async def tokens_since(key_id: str, since: float) -> int:
            return await directory.db.run(directory.tokens_since, key_id, since)

        try:
            await state.limiter.seed(principal, tokens_since)
        except StoreUnavailable:
            raise auth_unavailable() from None
    return principal


async def require_admin(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not principal.is_admin:
        raise forbidden()
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
AdminDep = Annotated[Principal, Depends(require_admin)]
