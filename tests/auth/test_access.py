"""Route walk (401s alike), roles (403), tenants (404), escalation, model clearance, fail-closed store."""

from __future__ import annotations

import base64
import hmac
import re
import sqlite3
import time

import pytest

from auth.conftest import World
from jongleur.api.admin.classify import is_protected, iter_routes
from jongleur.api.generation import make_engine_request, resolve_priority
from jongleur.api.security import PUBLIC_ROUTES
from jongleur.auth import Principal
from jongleur.auth.keys import Hasher
from jongleur.auth.principal import KeyPolicy
from jongleur.engine.types import Priority, SamplingParams


def _routes(world: World) -> list[tuple[str, str]]:
    out = []
    for r in iter_routes(world.client.app):
        for m in sorted(getattr(r, "methods", None) or []):
            if m != "HEAD":
                out.append((m, re.sub(r"\{[^}]+\}", "x", r.path), r))
    return out


def test_every_route_classified_and_bad_keys_get_one_401(world: World) -> None:
    pepper = (world.data_dir / "secrets" / "pepper").read_bytes()
    stored = hmac.new(pepper, world.keys["acme-member"].encode(), "sha256").digest()
    bad = {
        "none": {},
        "malformed": {"Authorization": "Bearer not-a-key"},
        "empty": {"Authorization": "Bearer "},
        "unknown": {"Authorization": "Bearer jl-" + "A" * 43},
        "revoked": world.h("revoked"),
        "expired": world.h("expired"),
        "hash-hex": {"Authorization": f"Bearer {stored.hex()}"},
        "hash-b64": {"Authorization": "Bearer jl-" + base64.urlsafe_b64encode(stored).decode().rstrip("=")[:43]},
        "x-api-key": {"x-api-key": world.keys["revoked"]},
    }
    checked = 0
    for method, path, route in _routes(world):
        if route.path in PUBLIC_ROUTES:
            assert not is_protected(route)
            assert world.client.request(method, path).status_code != 401, path
            continue
        bodies = set()
        for what, headers in bad.items():
            resp = world.client.request(method, path, headers=headers)
            assert resp.status_code == 401, (method, path, what, resp.text)
            assert resp.headers["www-authenticate"] == "Bearer"
            bodies.add(resp.content)
        assert len(bodies) == 1, (path, bodies)
        checked += 1
    assert checked >= 30
    # the good key passes the same gate
    assert world.client.get("/v1/models", headers=world.h("acme-member")).status_code == 200


def test_member_gets_403_on_every_admin_route(world: World) -> None:
    admin_routes = [(m, p) for m, p, _ in _routes(world) if p.startswith("/admin")]
    assert len(admin_routes) >= 10
    for method, path in admin_routes:
        resp = world.client.request(method, path, headers=world.h("acme-member"))
        assert resp.status_code == 403, (method, path, resp.text)
        assert resp.json()["error"]["type"] == "permission_error"


def test_cross_tenant_is_404_like_missing(world: World) -> None:
    c, other = world.client, world.ids["globex-member"]
    for headers in (world.h("acme-admin"), world.h("acme-member")):
        for method, path in [("GET", f"/admin/keys/{other}"), ("DELETE", f"/admin/keys/{other}"),
                             ("GET", f"/admin/keys/{other}/usage"),
                             ("GET", f"/admin/tenants/{world.tenants['globex']}/usage"),
                             ("DELETE", f"/v1/keys/{other}")]:
            resp = c.request(method, path, headers=headers)
            if path.startswith("/admin") and headers == world.h("acme-member"):
                assert resp.status_code == 403
                continue
            missing = c.request(method, path.replace(other, "key_0000").replace(world.tenants["globex"], "tn_0"),
                                headers=headers)
            assert resp.status_code == 404 and resp.json() == missing.json(), (method, path, resp.text)
    listed = c.get("/admin/keys", headers=world.h("acme-admin")).json()["data"]
    assert {k["tenant_id"] for k in listed} == {world.tenants["acme"]}
    assert all("digest" not in k and "key" not in k for k in listed)
    assert c.get("/admin/keys", headers=world.h("globex-member")).status_code == 403
    # the system admin sees all tenants
    assert len(c.get("/admin/tenants", headers=world.h("root")).json()["data"]) >= 3


@pytest.mark.parametrize("body,status", [
    ({"name": "x", "role": "admin"}, 403),
    ({"name": "x", "clearance": "secret"}, 403),
    ({"name": "x", "policy": {"priority": "high"}}, 403),
    ({"name": "x", "policy": {"weight": 5}}, 403),
    ({"name": "x", "is_admin": True}, 400),
    ({"name": "x", "policy": {"rpm": 5, "superuser": True}}, 400),
    ({"name": "x", "tenant_id": "system"}, 404),
])
def test_member_cannot_mint_a_stronger_key(world: World, body: dict, status: int) -> None:
    resp = world.client.post("/v1/keys", json=body, headers=world.h("acme-member"))
    assert resp.status_code == status, resp.text


def test_member_mints_a_weaker_key_and_admin_bounds(world: World) -> None:
    c = world.client
    resp = c.post("/v1/keys", json={"name": "mine", "clearance": "public", "policy": {"priority": "low"}},
                  headers=world.h("acme-member"))
    assert resp.status_code == 201 and resp.json()["key"].startswith("jl-")
    assert resp.headers["cache-control"] == "no-store"
    mine = resp.json()
    assert c.get("/v1/models", headers={"Authorization": f"Bearer {mine['key']}"}).status_code == 200
    assert mine["id"] in {k["id"] for k in c.get("/v1/keys", headers=world.h("acme-member")).json()["data"]}
    # a tenant admin cannot create tenants, nor keys above its own clearance
    assert c.post("/admin/tenants", json={"name": "evil"}, headers=world.h("acme-admin")).status_code == 403
    assert c.post("/admin/keys", json={"name": "s", "clearance": "secret"},
                  headers=world.h("acme-admin")).status_code == 403
    assert c.post("/admin/keys", json={"name": "a", "role": "admin", "clearance": "internal"},
                  headers=world.h("acme-admin")).status_code == 201
    # revocation works at once in this process
    assert c.delete(f"/v1/keys/{mine['id']}", headers=world.h("acme-member")).status_code == 200
    assert c.get("/v1/models", headers={"Authorization": f"Bearer {mine['key']}"}).status_code == 401
    audit = c.get("/admin/audit", headers=world.h("acme-admin")).json()["data"]
    assert {"key.create", "key.revoke"} <= {e["action"] for e in audit}
    assert all(e["tenant_id"] == world.tenants["acme"] for e in audit)


def test_model_above_clearance_is_missing_everywhere(world: World) -> None:
    c = world.client
    low, high = world.h("acme-member"), world.h("acme-secret")
    assert [m["id"] for m in c.get("/v1/models", headers=low).json()["data"]] == ["fake-chat"]
    assert "secret-model" in [m["id"] for m in c.get("/v1/models", headers=high).json()["data"]]
    assert [m["name"] for m in c.get("/api/tags", headers=low).json()["models"]] == ["fake-chat:latest"]
    hidden = c.get("/v1/models/secret-model", headers=low)
    missing = c.get("/v1/models/no-such-model", headers=low)
    assert hidden.status_code == missing.status_code == 404 and hidden.json()["error"]["code"] == "model_not_found"
    chat = {"model": "secret-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    resp = c.post("/v1/chat/completions", json=chat, headers=low)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == missing.json()["error"]["code"]
    assert c.post("/api/show", json={"model": "secret-model"}, headers=low).status_code == 404
    assert c.post("/v1/chat/completions", json=chat, headers=high).status_code == 200


def test_priority_is_clamped_and_mapped() -> None:
    low = Principal(id="k", tenant="t1", policy=KeyPolicy(priority="low", weight=2.0), authenticated=True,
                    tenant_weight=1.5)
    assert resolve_priority("high", low) is Priority.LOW
    assert resolve_priority(None, low) is Priority.LOW
    high = Principal(id="h", policy=KeyPolicy(priority="high"), authenticated=True)
    assert resolve_priority(None, high) is Priority.HIGH and resolve_priority("low", high) is Priority.LOW
    req = make_engine_request("r", [1, 2], SamplingParams(max_tokens=2), Priority.HIGH, low)
    assert (req.priority, req.tenant, req.tenant_weight, req.cache_salt) == (Priority.LOW, "t1", 3.0, "t1")


def test_locked_store_fails_closed_then_recovers(world: World) -> None:
    c = world.client
    db = c.app.state.auth.directory.db
    db.engine.dispose()  # another process takes the database: our pooled connections are gone
    lock = sqlite3.connect(world.data_dir / "jongleur.db", isolation_level=None, timeout=0.2)
    lock.execute("PRAGMA locking_mode=EXCLUSIVE")
    lock.execute("BEGIN EXCLUSIVE")
    lock.execute("INSERT INTO audit (ts, actor, actor_tenant, action, target_type, target_id, tenant_id, details)"
                 " VALUES (0, 'x', 'x', 'lock', 'x', 'x', 'x', '{}')")
    try:
        resp = c.get("/v1/models", headers=world.h("acme-member"))
        assert resp.status_code == 503 and resp.json()["error"]["code"] == "auth_unavailable", resp.text
        assert "retry-after" in resp.headers
    finally:
        lock.execute("ROLLBACK")
        lock.execute("PRAGMA locking_mode=NORMAL")
        lock.execute("SELECT 1 FROM tenants")
        lock.close()
    assert c.get("/v1/models", headers=world.h("acme-member")).status_code == 200


def test_key_check_cost(world: World) -> None:
    """HMAC-SHA256 of a key: the whole cost of checking a cached key (reported, loosely bounded)."""
    hasher = Hasher(b"p" * 32)
    key = world.keys["acme-member"]
    n = 20000
    t = time.perf_counter()
    for _ in range(n):
        hasher.same(hasher.digest(key), hasher.digest(key))
    per = (time.perf_counter() - t) / n / 2 * 1e6
    print(f"key digest + compare: {per:.2f} us")
    assert per < 200
