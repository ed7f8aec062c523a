"""`Database`: the engine and session factory, for SQLite (default, a file in the data dir) or
PostgreSQL (`database_url = "postgresql+psycopg://..."`).

Every failure to reach, lock or talk to the database surfaces as `StoreUnavailable`, which the API
maps to 503 (auth fails closed). Connections are checked before use (`pool_pre_ping`), so a database
that comes back is used again without a restart. Calls are blocking: async code runs them through
`Database.run` (a worker thread).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker

from jongleur.store import migrations

T = TypeVar("T")


class StoreUnavailable(Exception):
    """The database cannot be reached, is locked, or failed: callers fail closed (503)."""


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{Path(data_dir) / 'jongleur.db'}"


class Database:
    def __init__(self, url: str, *, timeout_s: float = 2.0) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                url, connect_args={"timeout": timeout_s, "check_same_thread": False},
                pool_pre_ping=True, pool_size=8, max_overflow=8, pool_timeout=timeout_s)

            @event.listens_for(self.engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA journal_mode=WAL")  # readers (auth) never wait for writers
                cur.execute("PRAGMA foreign_keys=ON")
                cur.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
                cur.close()
        else:
            self.engine = create_engine(
                url, pool_pre_ping=True, pool_size=8, max_overflow=8, pool_timeout=timeout_s,
                connect_args={"connect_timeout": max(1, int(timeout_s))})
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    def migrate(self) -> int:
        try:
            return migrations.migrate(self.engine.connect)
        except (OperationalError, DBAPIError, PoolTimeout) as exc:
            raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        try:
            with self._sessions() as s, s.begin():
                yield s
        except (OperationalError, PoolTimeout) as exc:
            raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated or isinstance(exc.orig, OSError):
                raise StoreUnavailable(f"database unavailable: {type(exc).__name__}") from exc
            raise

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking store call off the event loop."""
        return await asyncio.to_thread(fn, *args)

    def close(self) -> None:
        self.engine.dispose()
