"""RAG store fixtures: the same behavioural tests run on SQLite, on PostgreSQL with exact cosine
(the portable path) and on PostgreSQL with pgvector (skipped, saying so, where the extension is
not installed). PostgreSQL is the real local server `tests/store` starts (skipped without it)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from store.test_store import postgres  # noqa: F401  (the module-scoped PostgreSQL server fixture)

from jongleur.rag.store import RagStore

STORE_KINDS = ["sqlite", "postgresql-exact", "postgresql-pgvector"]


def fresh_database(server_url: str) -> str:
    """A new empty database on the test server, so each test starts from nothing."""
    import psycopg

    name = f"rag_{uuid.uuid4().hex[:12]}"
    dsn = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return server_url.replace("/postgres?", f"/{name}?")


@pytest.fixture(params=STORE_KINDS)
def rag_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RagStore]:
    store: RagStore
    if request.param == "sqlite":
        from jongleur.rag.sqlite_store import SqliteRagStore

        store = SqliteRagStore(tmp_path / "rag.sqlite")
    else:
        from jongleur.rag.pg_store import PostgresRagStore

        url = fresh_database(request.getfixturevalue("postgres"))
        store = PostgresRagStore(url, vectors="exact" if request.param.endswith("exact") else "auto")
        if request.param.endswith("pgvector") and not store.pgvector:
            store.close()
            pytest.skip("pgvector path skipped: CREATE EXTENSION vector failed (pgvector not installed)")
    yield store
    store.close()
