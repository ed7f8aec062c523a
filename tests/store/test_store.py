"""Migrations (idempotent, concurrent-safe), the append-only audit log, and the PostgreSQL path.

PostgreSQL: started from the local binaries (`initdb`/`pg_ctl` on PATH or under
/usr/lib/postgresql/*/bin, e.g. Debian's `postgresql` package) in a temporary directory, on a Unix
socket; skipped with a message when they are missing or psycopg is not installed.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from jongleur.auth.cli import CLI_ACTOR
from jongleur.auth.directory import Directory
from jongleur.auth.keys import Hasher
from jongleur.auth.schemas import KeyCreate, TenantCreate
from jongleur.store import Database, StoreUnavailable
from jongleur.store.migrations import LATEST


def _exercise(db: Database) -> None:
    assert db.migrate() == LATEST and db.migrate() == LATEST  # idempotent
    d = Directory(db, Hasher(b"k" * 32))
    d.ensure_system_tenant()
    tenant = d.create_tenant(CLI_ACTOR, TenantCreate(name="acme"))
    key = d.create_key(CLI_ACTOR, KeyCreate(name="k", tenant_id=tenant.id, policy={"rpm": 3}))
    found = d.lookup(d.hasher.digest(key.key))
    assert found is not None and found[0].id == key.id and found[0].policy == {"priority": "normal", "weight": 1.0,
                                                                                "rpm": 3}
    assert d.lookup(d.hasher.digest(found[0].digest.hex())) is None  # the stored digest is not a key
    with db.session() as s:
        assert key.key.encode() not in b"".join(bytes(r[0]) for r in s.execute(text("SELECT digest FROM api_keys")))
    d.record_usage({"ts": time.time(), "request_id": "r", "key_id": key.id, "tenant_id": tenant.id, "user_id": None,
                    "route": "/v1/chat/completions", "model": "m", "status": 200, "prompt_tokens": 5,
                    "completion_tokens": 7, "latency_ms": 1.0, "findings": []})
    assert d.tokens_since(key.id, 0) == 12
    assert [e.action for e in d.audit_log(CLI_ACTOR)][:2] == ["key.create", "tenant.create"]
    for stmt in ("UPDATE audit SET action = 'x'", "DELETE FROM audit"):
        with pytest.raises(Exception, match="append-only"), db.session() as s:
            s.execute(text(stmt))
    assert len(d.audit_log(CLI_ACTOR)) == 2


def test_sqlite(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path / 'j.db'}")
    _exercise(db)
    db.close()


def test_unreachable_database_is_store_unavailable(tmp_path: Path) -> None:
    if importlib.util.find_spec("psycopg") is None:
        pytest.skip("psycopg not installed")
    db = Database(f"postgresql+psycopg://nobody@/none?host={tmp_path}", timeout_s=1)
    with pytest.raises(StoreUnavailable):
        db.migrate()


def _pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(os.path.realpath(found)).parent
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return Path(dirs[-1]) if dirs else None


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    bindir = _pg_bin()
    if bindir is None or importlib.util.find_spec("psycopg") is None:
        pytest.skip("PostgreSQL test skipped: no initdb/pg_ctl (apt-get install postgresql) or no psycopg")
    base = Path(tempfile.mkdtemp(prefix="jongleur-pg-"))  # outside pytest's 0700 tree: postgres must enter it
    os.chmod(base, 0o777)
    data, sock = base / "data", base
    prefix: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: run it as the 'postgres' user
        if shutil.which("runuser") is None:
            pytest.skip("PostgreSQL test skipped: running as root without runuser")
        prefix = ["runuser", "-u", "postgres", "--"]
    run = lambda *a: subprocess.run([*prefix, *a], check=False, capture_output=True, text=True, timeout=60)
    r = run(str(bindir / "initdb"), "-D", str(data), "-U", "jongleur", "--auth=trust", "-E", "UTF8")
    if r.returncode != 0:
        pytest.skip(f"PostgreSQL test skipped: initdb failed: {r.stderr[-300:]}")
    r = run(str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(base / "log"), "-o",
            f"-k {sock} -c listen_addresses='' -c fsync=off", "start")
    if r.returncode != 0:
        pytest.skip(f"PostgreSQL test skipped: pg_ctl start failed: {r.stderr[-300:]}")
    try:
        yield f"postgresql+psycopg://jongleur@/postgres?host={sock}"
    finally:
        run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_postgresql(postgres: str) -> None:
    db = Database(postgres)
    _exercise(db)
    db.close()
