"""The RAG store on PostgreSQL (`rag_database_url = "postgresql+psycopg://..."`), through SQLAlchemy.

Tables live in their own schema (`jongleur_rag`), so the store may share a database with the
auth/usage store. Full text: a stored `tsvector` (english) with a GIN index, queried with
`websearch_to_tsquery` (the query words OR-ed) and ranked by `ts_rank_cd`. Vectors are stored as
`real[]` with their norm, so the store works on any PostgreSQL:

- with **pgvector** (`CREATE EXTENSION vector` succeeds): one HNSW cosine index per embedding
  width, on the expression `CAST(embedding AS vector(d))` and partial on `dims = d`; searches use
  iterative index scans (pgvector >= 0.8), so the access filter cannot starve top-k;
- without it: **exact** cosine computed in SQL over the visible chunks (unindexed, linear in the
  readable chunks; logged once at start).

Access control is the same `readable` / `visible` CTE as on SQLite, written with arrays.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from jongleur.rag.access import Caller
from jongleur.rag.chunking import ChunkDraft
from jongleur.rag.records import StoreError, query_words
from jongleur.rag.store import RagStore, chunk_row

log = logging.getLogger(__name__)

SCHEMA_NAME = "jongleur_rag"
SCHEMA = [
    f"CREATE SCHEMA IF NOT EXISTS {SCHEMA_NAME}",
    """CREATE TABLE IF NOT EXISTS collections(
      cid BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL,
      description TEXT NOT NULL DEFAULT '', level INTEGER NOT NULL, owner TEXT NOT NULL, embedder TEXT NOT NULL,
      dims INTEGER NOT NULL, created DOUBLE PRECISION NOT NULL, UNIQUE(tenant, name))""",
    """CREATE TABLE IF NOT EXISTS collection_acl(
      cid BIGINT NOT NULL REFERENCES collections(cid) ON DELETE CASCADE, entry TEXT NOT NULL,
      perm TEXT NOT NULL CHECK(perm IN ('read','write')), PRIMARY KEY(cid, entry, perm))""",
    """CREATE TABLE IF NOT EXISTS documents(
      did BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      cid BIGINT NOT NULL REFERENCES collections(cid) ON DELETE CASCADE,
      doc_id TEXT NOT NULL, filename TEXT NOT NULL, media_type TEXT NOT NULL, digest TEXT NOT NULL,
      version INTEGER NOT NULL, level INTEGER NOT NULL, size BIGINT NOT NULL, pages INTEGER,
      uploader TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, findings TEXT NOT NULL DEFAULT '[]',
      text TEXT NOT NULL, UNIQUE(cid, doc_id))""",
    "CREATE INDEX IF NOT EXISTS documents_digest ON documents(cid, digest)",
    """CREATE TABLE IF NOT EXISTS document_acl(
      did BIGINT NOT NULL REFERENCES documents(did) ON DELETE CASCADE, entry TEXT NOT NULL,
      PRIMARY KEY(did, entry))""",
    """CREATE TABLE IF NOT EXISTS chunks(
      id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      did BIGINT NOT NULL REFERENCES documents(did) ON DELETE CASCADE,
      ord INTEGER NOT NULL, text TEXT NOT NULL, heading TEXT NOT NULL, page INTEGER,
      start INTEGER NOT NULL, "end" INTEGER NOT NULL, tokens INTEGER NOT NULL, flag TEXT,
      dims INTEGER NOT NULL, norm REAL NOT NULL, embedding REAL[] NOT NULL,
      tsv TSVECTOR GENERATED ALWAYS AS (to_tsvector('english', heading || ' ' || text)) STORED)""",
    "CREATE INDEX IF NOT EXISTS chunks_did ON chunks(did)",
    "CREATE INDEX IF NOT EXISTS chunks_tsv ON chunks USING gin(tsv)",
]

ACCESS_CTE = """
WITH readable AS (
  SELECT c.cid FROM collections c
  WHERE c.tenant = :tenant AND c.level <= :clearance
    AND (:admin OR c.owner = :user OR EXISTS (
          SELECT 1 FROM collection_acl a WHERE a.cid = c.cid AND a.entry = ANY(CAST(:entries AS TEXT[]))))
    AND (CAST(:allowed AS TEXT[]) IS NULL OR lower(c.name) LIKE ANY(CAST(:allowed AS TEXT[])))
    AND (CAST(:wanted AS TEXT[]) IS NULL OR c.name = ANY(CAST(:wanted AS TEXT[])))),
visible AS (
  SELECT d.did FROM documents d
  WHERE d.cid IN (SELECT cid FROM readable) AND d.level <= :clearance
    AND (:admin OR d.uploader = :user OR NOT EXISTS (SELECT 1 FROM document_acl x WHERE x.did = d.did)
         OR EXISTS (SELECT 1 FROM document_acl x WHERE x.did = d.did
                    AND x.entry = ANY(CAST(:entries AS TEXT[])))))
"""

VectorMode = Literal["auto", "exact"]
HNSW_MAX_DIMS = 2000


def glob_to_like(pattern: str) -> str:
    """A key's collection glob (`fin-*`) as a LIKE pattern (`fin-%`), matched case-insensitively."""
    escaped = re.sub(r"([%_\\])", r"\\\1", pattern.lower())
    return escaped.replace("*", "%").replace("?", "_")


class _PgTx:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def rows(self, sql: str, args: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        result = self.conn.execute(text(sql), dict(args))
        return [tuple(r) for r in result.all()] if result.returns_rows else []

    def run_many(self, sql: str, args: Sequence[Mapping[str, Any]]) -> None:
        self.conn.execute(text(sql), [dict(a) for a in args])


class PostgresRagStore(RagStore):
    access_cte = ACCESS_CTE
    integrity_checks: ClassVar[dict[str, str]] = {
        "chunks_without_text_index": "SELECT count(*) FROM chunks WHERE tsv IS NULL",
        "chunks_with_wrong_width": "SELECT count(*) FROM chunks WHERE cardinality(embedding) <> dims",
        "acl_without_document": "SELECT count(*) FROM document_acl WHERE did NOT IN (SELECT did FROM documents)",
    }

    def __init__(self, url: str, *, vectors: VectorMode = "auto", timeout_s: float = 10.0) -> None:
        if url.startswith(("postgresql://", "postgres://")):
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
        self.engine = create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4, pool_timeout=timeout_s,
                                    connect_args={"connect_timeout": max(1, int(timeout_s))})

        @event.listens_for(self.engine, "connect")
        def _search_path(dbapi_conn: Any, _record: Any) -> None:
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET search_path TO {SCHEMA_NAME}, public")
            dbapi_conn.commit()

        with self._tx() as tx:
            for stmt in SCHEMA:
                tx.rows(stmt, {})
        self.pgvector = vectors == "auto" and self._enable_pgvector()
        self.iterative_scan = self.pgvector and self._pgvector_version() >= (0, 8)
        self._indexed_dims: set[int] = set()
        if not self.pgvector:
            log.warning("RAG on PostgreSQL without pgvector: vector search is exact cosine in SQL over the "
                        "readable chunks (no index); install pgvector for HNSW")

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def _tx(self) -> Iterator[_PgTx]:
        """One transaction; an unreachable or failing server is a 503 (nothing half written: it rolls back)."""
        try:
            with self.engine.begin() as conn:
                yield _PgTx(conn)
        except (OperationalError, InterfaceError, PoolTimeout) as exc:
            log.warning("document database error: %s", str(getattr(exc, "orig", exc)).splitlines()[0])
            raise StoreError("the document database is unavailable", 503, "store_unavailable") from None

    def _enable_pgvector(self) -> bool:
        try:
            with self.engine.begin() as conn:
                conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            return True
        except DBAPIError as exc:
            log.info("pgvector not available (%s)", str(exc.orig).splitlines()[0])
            return False

    def _pgvector_version(self) -> tuple[int, ...]:
        version = self._rows("SELECT extversion FROM pg_extension WHERE extname = 'vector'")[0][0]
        return tuple(int(p) for p in re.findall(r"\d+", version)[:3])

    def _indexed(self, dims: int) -> bool:
        """Whether vectors of this width are searched through HNSW (pgvector indexes at most 2,000 dims)."""
        return self.pgvector and 0 < dims <= HNSW_MAX_DIMS

    def _hnsw_index(self, tx: _PgTx, dims: int) -> None:
        """One HNSW index per embedding width (partial, on the cast), made when the width first appears."""
        if dims in self._indexed_dims:
            return
        tx.rows("SELECT pg_advisory_xact_lock(hashtext('jongleur_rag.hnsw'))", {})  # two first uploads: one builds
        tx.rows(f"CREATE INDEX IF NOT EXISTS chunks_hnsw_{dims} ON chunks USING hnsw "
                f"((CAST(embedding AS vector({dims}))) vector_cosine_ops) WHERE dims = {dims}", {})
        self._indexed_dims.add(dims)

    def _hnsw_settings(self, tx: _PgTx, k: int) -> None:
        tx.rows(f"SET LOCAL hnsw.ef_search = {max(40, min(k, 1000))}", {})
        if self.iterative_scan:  # keep scanning the index until k rows pass the access filter
            tx.rows("SET LOCAL hnsw.iterative_scan = strict_order", {})

    def hnsw_query(self, dims: int) -> str:
        """The pgvector kNN query; the access filter is an array test so the planner keeps the HNSW scan."""
        return self.access_cte + f"""
            SELECT ch.id FROM chunks ch
            WHERE ch.dims = {int(dims)} AND ch.did = ANY(ARRAY(SELECT did FROM visible))
            ORDER BY CAST(ch.embedding AS vector({int(dims)})) <=> CAST(CAST(:q AS REAL[]) AS vector({int(dims)}))
            LIMIT :k"""

    def _access(self, caller: Caller, wanted: Sequence[str] | None = None) -> dict[str, Any]:
        allowed = caller.allowed_collections
        return {
            "entries": caller.acl_entries(), "tenant": caller.tenant, "clearance": int(caller.clearance),
            "admin": caller.is_admin, "user": caller.user,
            "allowed": None if allowed is None else [glob_to_like(p) for p in sorted(allowed)],
            "wanted": None if wanted is None else list(wanted),
        }

    def _insert_chunks(self, tx: _PgTx, did: int, chunks: Sequence[ChunkDraft],  # type: ignore[override]
                       embeddings: Sequence[Sequence[float]], flags: Sequence[str | None]) -> None:
        rows = []
        for i, (c, vec, flag) in enumerate(zip(chunks, embeddings, flags, strict=True)):
            values = [float(x) for x in vec]
            norm = math.sqrt(sum(x * x for x in values))
            rows.append(chunk_row(did, i, c, flag) | {"dims": len(values), "norm": norm, "embedding": values})
        for dims in {r["dims"] for r in rows}:
            if self._indexed(dims):
                self._hnsw_index(tx, dims)
        tx.run_many('INSERT INTO chunks(did, ord, text, heading, page, start, "end", tokens, flag, dims, norm, '
                    "embedding) VALUES (:did, :ord, :text, :heading, :page, :start, :end, :tokens, :flag, :dims, "
                    ":norm, CAST(:embedding AS REAL[]))", rows)

    def _vector_ids(self, args: dict[str, Any], vector: Sequence[float], k: int) -> list[int]:
        q = [float(x) for x in vector]
        dims = len(q)  # an int from len(): safe to inline, and it must be literal to match the index
        args = args | {"q": q, "k": k, "dims": dims}
        if self._indexed(dims):
            with self._tx() as tx:
                self._hnsw_settings(tx, k)
                return [r[0] for r in tx.rows(self.hnsw_query(dims), args)]
        qnorm = math.sqrt(sum(x * x for x in q)) or 1.0  # float8 products: real * real underflows
        return self._visible_ids("""
            SELECT ch.id FROM chunks ch WHERE ch.dims = :dims AND ch.did IN (SELECT did FROM visible)
            ORDER BY (SELECT sum(a * b) FROM unnest(ch.embedding, CAST(:q AS DOUBLE PRECISION[])) AS t(a, b))
                     / (NULLIF(ch.norm, 0) * :qnorm) DESC NULLS LAST, ch.id
            LIMIT :k""", args | {"qnorm": qnorm})

    def _text_ids(self, args: dict[str, Any], text_query: str, k: int) -> list[int]:
        words = query_words(text_query)
        if not words:
            return []
        return self._visible_ids("""
            SELECT ch.id FROM chunks ch, websearch_to_tsquery('english', :words) AS q
            WHERE ch.tsv @@ q AND ch.did IN (SELECT did FROM visible)
            ORDER BY ts_rank_cd(ch.tsv, q) DESC, ch.id LIMIT :k""", args | {"words": " or ".join(words), "k": k})
