"""The model catalog admin API (system admins): store, aliases, load/unload, zero-downtime update.

    GET    /admin/models                  store versions, what is loaded, memory in use
    GET    /admin/catalog/events          Server-Sent Events: loading, ready, failed, unloaded, update steps
    GET    /admin/models/{ref}            one manifest (`name@tag` or `name`)
    POST   /admin/models/import           {"path", "name"?, "tag"?}: a GGUF file or HF folder on the server
    POST   /admin/models/pull             {"spec", "revision"?, "sha256"?, "name"?, "tag"?}: from the hub
    DELETE /admin/models/{ref}            remove a version (not while an alias points at it)
    POST   /admin/models/{ref}/load       load and pin;  POST /admin/models/{ref}/unload
    GET    /admin/aliases                 every alias and its weighted targets
    PUT    /admin/aliases/{alias}         {"targets": [{"ref", "weight"}]}: set at once (no check)
    POST   /admin/models/update           {"alias", "version" | "targets"}: load, canary, switch, drain
    POST   /admin/models/rollback         {"alias"}: the same, back to the previous targets

A rejected update is 422 `update_failed` and the alias keeps its old version.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from jongleur.api.body import parse_body
from jongleur.api.errors import APIError, bad_request, not_found
from jongleur.api.sse import sse
from jongleur.auth.dependency import require_admin
from jongleur.auth.errors import forbidden
from jongleur.auth.principal import Principal
from jongleur.catalog.manager import CatalogError, CatalogManager
from jongleur.catalog.names import InvalidName, parse_ref
from jongleur.catalog.store import AliasTarget, NotInStore, StoreError


async def require_system_admin(principal: Principal = Depends(require_admin)) -> Principal:  # noqa: B008
    if not principal.is_system_admin:
        raise forbidden()
    return principal


router = APIRouter(tags=["admin"], dependencies=[Depends(require_system_admin)])
KEEPALIVE_S = 15.0


class ImportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(max_length=4096)
    name: str | None = None
    tag: str | None = None


class PullBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: str = Field(max_length=300)  # REPO or REPO:FILE, validated by catalog/pull.py
    revision: str = Field("main", max_length=100)
    sha256: str | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$")
    name: str | None = Field(None, max_length=100)
    tag: str | None = Field(None, max_length=100)


class TargetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ref: str = Field(max_length=100)
    weight: int = Field(100, ge=0, le=1_000_000)


class AliasBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    targets: list[TargetBody] = Field(min_length=1, max_length=8)


class UpdateBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias: str = Field(max_length=100)
    version: str | None = Field(None, max_length=100)
    targets: list[TargetBody] | None = Field(None, min_length=1, max_length=8)


class RollbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    alias: str = Field(max_length=100)


def _catalog(request: Request) -> CatalogManager:
    catalog = request.app.state.registry.catalog
    if catalog is None:
        raise APIError(404, "the model catalog is off (catalog = false)", code="catalog_disabled")
    return catalog


def _errors(exc: Exception) -> APIError:
    if isinstance(exc, InvalidName):
        return bad_request(str(exc), param=exc.what.replace(" ", "_"))
    if isinstance(exc, NotInStore):
        return not_found(str(exc))
    if isinstance(exc, CatalogError):
        return APIError(exc.status, str(exc), code=exc.code)
    return bad_request(str(exc), code="store_error")


_HANDLED = (InvalidName, StoreError, CatalogError)


def _listing(catalog: CatalogManager) -> dict[str, Any]:
    loaded = {e.manifest.ref: e for e in catalog.loaded()}
    models = []
    for m in catalog.store.list():
        e = loaded.get(m.ref)
        models.append({"ref": m.ref, "name": m.name, "tag": m.tag, "architecture": m.architecture,
                       "format": m.format, "size": m.size, "digest": m.digest, "security_level": m.security_level,
                       "aliases": catalog.aliases_of(m.ref), "loaded": e is not None,
                       "inflight": e.inflight if e else 0, "pinned": bool(e and e.pinned),
                       "memory_estimate": catalog.estimate(m)})
    return {"models": models, "memory_used": catalog.used_bytes(),
            "memory_budget": catalog.config.memory_budget_bytes}


@router.get("/admin/models")
async def list_store(request: Request) -> dict[str, Any]:
    return _listing(_catalog(request))


@router.post("/admin/models/import")
async def import_model(request: Request) -> dict[str, Any]:
    body = await parse_body(request, ImportBody)
    catalog = _catalog(request)
    try:
        m = await asyncio.to_thread(catalog.store.import_path, body.path, body.name, body.tag)
    except _HANDLED as exc:
        raise _errors(exc) from None
    return {"ref": m.ref, "digest": m.digest, "size": m.size}


@router.post("/admin/models/pull")
async def pull_model(request: Request) -> dict[str, Any]:
    """Download from the hub (`hub_url`) into the store; progress as `pulling` events."""
    from jongleur.catalog.events import pull_progress
    from jongleur.catalog.pull import HubClient, pull

    body = await parse_body(request, PullBody)
    catalog = _catalog(request)
    on_progress = pull_progress(catalog.events, body.spec, asyncio.get_running_loop())
    hub = HubClient(request.app.state.settings.hub_url, token=os.environ.get("HF_TOKEN"), progress=False,
                    on_progress=on_progress)
    try:
        m = await asyncio.to_thread(pull, catalog.store, body.spec, revision=body.revision, sha256=body.sha256,
                                    name=body.name, tag=body.tag, hub=hub)
    except _HANDLED as exc:
        catalog.events.publish("failed", body.spec[:300], message=str(exc)[:500])
        raise _errors(exc) from None
    finally:
        hub.client.close()
    catalog.events.publish("pulled", m.ref, 1.0, f"{m.size} bytes from {body.spec}")
    return {"ref": m.ref, "digest": m.digest, "size": m.size}


@router.post("/admin/models/update")
async def update(request: Request) -> dict[str, Any]:
    body = await parse_body(request, UpdateBody)
    if (body.version is None) == (body.targets is None):
        raise bad_request("give exactly one of version and targets", param="version")
    targets = [AliasTarget(body.version, 100)] if body.version else \
        [AliasTarget(t.ref, t.weight) for t in body.targets or []]
    try:
        parse_ref(body.alias)
        return await _catalog(request).update(body.alias, targets)
    except _HANDLED as exc:
        raise _errors(exc) from None


@router.post("/admin/models/rollback")
async def rollback(request: Request) -> dict[str, Any]:
    body = await parse_body(request, RollbackBody)
    try:
        parse_ref(body.alias)
        return await _catalog(request).rollback(body.alias)
    except _HANDLED as exc:
        raise _errors(exc) from None


@router.get("/admin/catalog/events")
async def events(request: Request) -> Response:
    """Load progress and update steps as they happen (`catalog/events.py`), until the client leaves."""
    catalog = _catalog(request)

    async def stream() -> AsyncIterator[bytes]:
        with catalog.events.subscribe() as queue:
            yield b": subscribed\n\n"  # the client knows from here on it misses nothing
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), timeout=KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"  # proxies close silent connections
                    continue
                yield f"event: {item.event}\ndata: {json.dumps(item.to_dict())}\n\n".encode()

    return sse(stream())


@router.get("/admin/models/{ref}")
async def show(request: Request, ref: str) -> dict[str, Any]:
    try:
        m = _catalog(request).store.find(ref)
    except _HANDLED as exc:
        raise _errors(exc) from None
    return json.loads(m.to_json())


@router.delete("/admin/models/{ref}")
async def remove(request: Request, ref: str) -> dict[str, Any]:
    catalog = _catalog(request)
    try:
        parsed = parse_ref(ref)
        if parsed.tag is None:
            raise bad_request("name the version to remove: name@tag", param="ref")
        if any(e.manifest.ref == str(parsed) for e in catalog.loaded()):
            await catalog.unload(str(parsed))
        m = catalog.store.remove(parsed.name, parsed.tag)
    except _HANDLED as exc:
        raise _errors(exc) from None
    return {"removed": m.ref}


@router.post("/admin/models/{ref}/load")
async def load(request: Request, ref: str) -> dict[str, Any]:
    catalog = _catalog(request)
    try:
        entry = await catalog.acquire(catalog.store.find(ref), pin=True)
    except _HANDLED as exc:
        raise _errors(exc) from None
    return {"loaded": entry.manifest.ref, "pinned": True}


@router.post("/admin/models/{ref}/unload")
async def unload(request: Request, ref: str) -> dict[str, Any]:
    try:
        done = await _catalog(request).unload(ref)
    except _HANDLED as exc:
        raise _errors(exc) from None
    if not done:
        raise APIError(409, f"{ref} has requests in flight", code="model_busy")
    return {"unloaded": ref}


@router.get("/admin/aliases")
async def aliases(request: Request) -> dict[str, Any]:
    store = _catalog(request).store
    return {"aliases": [{"alias": a.name, "targets": [t.__dict__ for t in a.targets],
                         "previous": [t.__dict__ for t in a.previous]} for a in store.aliases().values()]}


@router.put("/admin/aliases/{alias}")
async def set_alias(request: Request, alias: str) -> dict[str, Any]:
    body = await parse_body(request, AliasBody)
    try:
        a = _catalog(request).store.set_alias(alias, [AliasTarget(t.ref, t.weight) for t in body.targets])
    except _HANDLED as exc:
        raise _errors(exc) from None
    return {"alias": a.name, "targets": [t.__dict__ for t in a.targets]}
