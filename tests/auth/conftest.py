"""An in-process app over a fake engine with a fresh data dir, and keys of every kind."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from api.fakes import fake_model
from fastapi.testclient import TestClient
from sqlalchemy import update

from jongleur.api.app import create_app
from jongleur.api.model_registry import ModelRegistry
from jongleur.auth.cli import CLI_ACTOR
from jongleur.auth.schemas import KeyCreate, TenantCreate
from jongleur.auth.setup import open_directory
from jongleur.config import Settings
from jongleur.store import ApiKey


@dataclass
class World:
    client: TestClient
    keys: dict[str, str]  # name -> secret
    ids: dict[str, str]  # name -> key id
    tenants: dict[str, str]  # name -> tenant id
    data_dir: Path

    def h(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data = tmp_path_factory.mktemp("auth-data")
    settings = Settings.load(model="", embedding_model="", data_dir=data, auth_cache_ttl_s=0.0,
                             model_clearance={"secret-model": "secret"})
    directory = open_directory(settings)
    tenants = {n: directory.create_tenant(CLI_ACTOR, TenantCreate(name=n)).id for n in ("acme", "globex")}
    keys: dict[str, str] = {}
    ids: dict[str, str] = {}

    def make(name: str, tenant: str, **kw: object) -> None:
        k = directory.create_key(CLI_ACTOR, KeyCreate(name=name, tenant_id=tenants.get(tenant, tenant), **kw))
        keys[name], ids[name] = k.key, k.id

    make("root", "system", role="admin", clearance="secret", policy={"priority": "high"})
    make("acme-admin", "acme", role="admin", clearance="confidential")
    make("acme-member", "acme", clearance="internal")
    make("acme-secret", "acme", clearance="secret", policy={"priority": "high"})
    make("globex-admin", "globex", role="admin")
    make("globex-member", "globex")
    make("revoked", "acme")
    make("expired", "acme")
    directory.revoke_key(CLI_ACTOR, ids["revoked"])
    with directory.db.session() as s:
        s.execute(update(ApiKey).where(ApiKey.id == ids["expired"]).values(expires_at=time.time() - 1))
    directory.db.close()
    registry = ModelRegistry()
    registry.add(fake_model("fake-chat"))
    registry.add(fake_model("secret-model"))
    app = create_app(settings, registry)
    with TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as client:
        yield World(client, keys, ids, tenants, data)
