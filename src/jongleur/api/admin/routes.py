"""Routes over `auth.Directory`. Bodies are parsed strictly (unknown fields -> 400), the directory
decides visibility (404) and rights (403); every change is written to the audit log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from jongleur.api.body import parse_body
from jongleur.api.errors import APIError, not_found, unavailable
from jongleur.auth.dependency import AdminDep, PrincipalDep, get_principal, require_admin
from jongleur.auth.directory import Conflict, Directory, Forbidden, NotFound
from jongleur.auth.schemas import KeyCreate, TenantCreate, UsageSummary, UserCreate
from jongleur.store import StoreUnavailable

T = TypeVar("T")

admin_router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])
self_router = APIRouter(tags=["usage"], dependencies=[Depends(get_principal)])


async def _call(request: Request, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    directory: Directory = request.app.state.auth.directory
    try:
        return await directory.db.run(lambda: fn(directory, *args, **kwargs))
    except NotFound:
        raise not_found("not found", param=None, code="not_found") from None
    except Forbidden as exc:
        raise APIError(403, exc.message, param=exc.param, code="permission_denied") from None
    except Conflict as exc:
        raise APIError(409, str(exc), code="conflict") from None
    except StoreUnavailable:
        raise unavailable("the state database is unavailable; retry later", code="store_unavailable",
                          retry_after_s=2) from None


def _json(value: Any, status: int = 200) -> JSONResponse:
    if isinstance(value, list):
        return JSONResponse({"object": "list", "data": [v.model_dump(mode="json") for v in value]}, status)
    return JSONResponse(value.model_dump(mode="json"), status)


# ---- /admin
@admin_router.post("/tenants")
async def create_tenant(request: Request, actor: AdminDep) -> JSONResponse:
    spec = await parse_body(request, TenantCreate)
    return _json(await _call(request, Directory.create_tenant, actor, spec), 201)


@admin_router.get("/tenants")
async def list_tenants(request: Request, actor: AdminDep) -> JSONResponse:
    return _json(await _call(request, Directory.list_tenants, actor))


@admin_router.get("/tenants/{tenant_id}/usage")
async def tenant_usage(request: Request, actor: AdminDep, tenant_id: str, limit: int = 100) -> JSONResponse:
    return _summary(await _call(request, Directory.usage, actor, own=False, tenant_id=tenant_id, limit=_lim(limit)))


@admin_router.post("/users")
async def create_user(request: Request, actor: AdminDep) -> JSONResponse:
    spec = await parse_body(request, UserCreate)
    return _json(await _call(request, Directory.create_user, actor, spec), 201)


@admin_router.get("/users")
async def list_users(request: Request, actor: AdminDep, tenant_id: str | None = None) -> JSONResponse:
    return _json(await _call(request, Directory.list_users, actor, tenant_id))


@admin_router.post("/keys")
async def admin_create_key(request: Request, actor: AdminDep) -> JSONResponse:
    return await _create_key(request, actor)


@admin_router.get("/keys")
async def admin_list_keys(request: Request, actor: AdminDep, tenant_id: str | None = None) -> JSONResponse:
    return _json(await _call(request, Directory.list_keys, actor, tenant_id))


@admin_router.get("/keys/{key_id}")
async def admin_get_key(request: Request, actor: AdminDep, key_id: str) -> JSONResponse:
    return _json(await _call(request, Directory.get_key, actor, key_id))


@admin_router.delete("/keys/{key_id}")
async def admin_revoke_key(request: Request, actor: AdminDep, key_id: str) -> JSONResponse:
    return await _revoke(request, actor, key_id)


@admin_router.get("/keys/{key_id}/usage")
async def key_usage(request: Request, actor: AdminDep, key_id: str, limit: int = 100) -> JSONResponse:
    return _summary(await _call(request, Directory.usage, actor, own=False, key_id=key_id, limit=_lim(limit)))


@admin_router.get("/usage")
async def all_usage(request: Request, actor: AdminDep, since: float | None = None, limit: int = 100) -> JSONResponse:
    return _summary(await _call(request, Directory.usage, actor, own=False, since=since, limit=_lim(limit)))


@admin_router.get("/audit")
async def audit(request: Request, actor: AdminDep, limit: int = 200) -> JSONResponse:
    return _json(await _call(request, Directory.audit_log, actor, _lim(limit, 1000)))


# ---- self-service
@self_router.get("/v1/usage")
async def own_usage(request: Request, actor: PrincipalDep, since: float | None = None,
                    limit: int = 100) -> JSONResponse:
    return _summary(await _call(request, Directory.usage, actor, own=True, since=since, limit=_lim(limit)))


@self_router.get("/v1/keys")
async def own_keys(request: Request, actor: PrincipalDep) -> JSONResponse:
    return _json(await _call(request, Directory.list_keys, actor))


@self_router.post("/v1/keys")
async def own_create_key(request: Request, actor: PrincipalDep) -> JSONResponse:
    return await _create_key(request, actor)


@self_router.delete("/v1/keys/{key_id}")
async def own_revoke_key(request: Request, actor: PrincipalDep, key_id: str) -> JSONResponse:
    return await _revoke(request, actor, key_id)


async def _create_key(request: Request, actor: Any) -> JSONResponse:
    spec = await parse_body(request, KeyCreate)
    created = await _call(request, Directory.create_key, actor, spec)
    request.app.state.auth.keys_changed()
    return JSONResponse(created.model_dump(mode="json"), 201, headers={"Cache-Control": "no-store"})


async def _revoke(request: Request, actor: Any, key_id: str) -> JSONResponse:
    out = await _call(request, Directory.revoke_key, actor, key_id)
    request.app.state.auth.invalidate(key_id)
    request.app.state.auth.keys_changed()
    return _json(out)


def _lim(limit: int, most: int = 1000) -> int:
    return max(1, min(limit, most))


def _summary(records: list[Any]) -> JSONResponse:
    body = UsageSummary(requests=len(records), prompt_tokens=sum(r.prompt_tokens for r in records),
                        completion_tokens=sum(r.completion_tokens for r in records), records=records)
    return JSONResponse(body.model_dump(mode="json"))
