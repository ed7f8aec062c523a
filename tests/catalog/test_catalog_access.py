"""Store models obey clearance and scopes like configured ones; the catalog admin API is for system admins."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from jongleur.api.app import create_app
from jongleur.api.model_registry import ModelRegistry
from jongleur.auth.cli import CLI_ACTOR
from jongleur.auth.schemas import KeyCreate, TenantCreate
from jongleur.auth.setup import open_directory
from jongleur.catalog.manager import CatalogManager, ManagerConfig
from jongleur.catalog.manifest import Manifest, ManifestFile
from jongleur.catalog.store import AliasTarget, ModelStore
from jongleur.config import Settings


def _add(store: ModelStore, name: str, level: str = "public") -> None:
    store.register(Manifest(name=name, tag="1", architecture="llama", format="gguf",
                            files=(ManifestFile("m.gguf", "0" * 64, 1),), size=1, security_level=level,
                            external_path="/nonexistent"))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    data: Path = tmp_path_factory.mktemp("catalog-access")
    settings = Settings.load(model="", embedding_model="", data_dir=data, auth_cache_ttl_s=0.0,
                             model_clearance={"topsecret": "secret"})
    directory = open_directory(settings)
    acme = directory.create_tenant(CLI_ACTOR, TenantCreate(name="acme")).id
    keys = {}
    for name, tenant, kw in [("root", "system", {"role": "admin", "clearance": "secret"}),
                             ("acme-admin", acme, {"role": "admin", "clearance": "confidential"}),
                             ("member", acme, {"clearance": "internal"})]:
        k = directory.create_key(CLI_ACTOR, KeyCreate(name=name, tenant_id=tenant, **kw))
        keys[name] = {"Authorization": f"Bearer {k.key}"}
    directory.db.close()
    store = ModelStore(data / "models")
    _add(store, "pub")
    _add(store, "conf", "confidential")
    _add(store, "topsecret")
    store.set_alias("chat", [AliasTarget("pub@1")])

    async def never(path: Path, m: Manifest) -> None:
        raise AssertionError("a hidden model must not load")

    registry = ModelRegistry()
    registry.catalog = CatalogManager(store, ManagerConfig(memory_budget_bytes=1 << 30, kv_bytes=0), never)  # type: ignore[arg-type]
    with TestClient(create_app(settings, registry), base_url="http://127.0.0.1:8000",
                    raise_server_exceptions=False) as client:
        yield client, keys


def test_lists_filtered_by_clearance(world: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, keys = world
    ids = lambda who: sorted(m["id"] for m in c.get("/v1/models", headers=keys[who]).json()["data"])
    assert ids("member") == ["pub@1"]
    assert ids("acme-admin") == ["conf@1", "pub@1"]
    assert ids("root") == ["conf@1", "pub@1", "topsecret@1"]
    tags = c.get("/api/tags", headers=keys["member"]).json()["models"]
    assert [m["name"] for m in tags] == ["pub:1"]
    assert c.get("/api/ps", headers=keys["member"]).json()["models"] == []


def test_hidden_model_is_missing_everywhere(world: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, keys = world
    missing = c.post("/v1/chat/completions", headers=keys["member"],
                     json={"model": "nope@1", "messages": [{"role": "user", "content": "x"}]})
    assert missing.status_code == 404
    for name in ("conf@1", "conf", "topsecret", "topsecret:1"):
        r = c.post("/v1/chat/completions", headers=keys["member"],
                   json={"model": name, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 404 and r.json()["error"]["code"] == missing.json()["error"]["code"], name
        assert c.get(f"/v1/models/{name}", headers=keys["member"]).status_code == 404


def test_catalog_admin_is_for_system_admins(world: tuple[TestClient, dict[str, dict[str, str]]]) -> None:
    c, keys = world
    assert c.get("/admin/models", headers=keys["member"]).status_code == 403
    assert c.get("/admin/models", headers=keys["acme-admin"]).status_code == 403
    assert c.post("/admin/models/update", headers=keys["acme-admin"],
                  json={"alias": "chat", "version": "conf@1"}).status_code == 403
    listing = c.get("/admin/models", headers=keys["root"]).json()
    assert {m["ref"] for m in listing["models"]} == {"pub@1", "conf@1", "topsecret@1"}
    assert c.get("/admin/aliases", headers=keys["root"]).json()["aliases"][0]["alias"] == "chat"
