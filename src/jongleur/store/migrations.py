"""Versioned schema migrations: a `schema_migrations` table and an ordered list of steps.

Why not alembic: the schema is small, must be created by `jongleur serve` and the CLI alike with no
extra files on disk, and the steps must run on SQLite and PostgreSQL. A step is a function of a
connection; each runs once, in order, inside one transaction with its version row. Two processes
starting at once: the loser of the race sees the version row and skips.

Rule: a change to `store.models` comes with a new step here (step 1 creates the tables as they were
at version 1; later steps ALTER existing databases).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Column as C
from sqlalchemy import Connection, Float, Integer, MetaData, String, Table, text
from sqlalchemy.exc import IntegrityError

from jongleur.store.models import Base

_meta = MetaData()
schema_migrations = Table(
    "schema_migrations", _meta,
    C("version", Integer, primary_key=True), C("name", String(200)), C("applied_at", Float),
)


def _v1_tables(conn: Connection) -> None:
    Base.metadata.create_all(conn, checkfirst=True)


def _v2_audit_append_only(conn: Connection) -> None:
    if conn.dialect.name == "sqlite":
        for op in ("UPDATE", "DELETE"):
            conn.execute(text(
                f"CREATE TRIGGER IF NOT EXISTS audit_no_{op.lower()} BEFORE {op} ON audit "
                "BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END"))
    elif conn.dialect.name == "postgresql":
        conn.execute(text(
            "CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'the audit log is append-only'; END $$ LANGUAGE plpgsql"))
        conn.execute(text("DROP TRIGGER IF EXISTS audit_append_only ON audit"))
        conn.execute(text("CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit "
                          "FOR EACH ROW EXECUTE FUNCTION audit_append_only()"))


MIGRATIONS: list[tuple[int, str, Callable[[Connection], None]]] = [
    (1, "tenants, users, api keys, usage, audit", _v1_tables),
    (2, "audit log append-only", _v2_audit_append_only),
]
LATEST = MIGRATIONS[-1][0]


def current_version(conn: Connection) -> int:
    _meta.create_all(conn, checkfirst=True)
    row = conn.execute(text("SELECT MAX(version) FROM schema_migrations")).scalar()
    return int(row or 0)


def migrate(engine_connect: Callable[[], Connection]) -> int:
    """Apply every missing step; returns the version the database is at."""
    for version, name, step in MIGRATIONS:
        with engine_connect() as conn, conn.begin():
            if current_version(conn) >= version:
                continue
            step(conn)
            try:
                conn.execute(schema_migrations.insert().values(version=version, name=name, applied_at=time.time()))
            except IntegrityError:  # another process applied it first; its DDL was idempotent too
                conn.rollback()
    with engine_connect() as conn:
        return current_version(conn)
