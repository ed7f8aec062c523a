"""The embedded RAG store: one SQLite file (apsw + sqlite-vec + FTS5).

Vector search is exact cosine kNN over the visible chunks (sqlite-vec's `vec_distance_cosine`,
~18 ms per query at 20k×384 here); full text is FTS5 BM25, kept in step with the chunks table by
triggers. The shared logic and the access rules are in `store.RagStore`.
"""

from __future__ import annotations

import json
import threading
from array import array
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar

import apsw
import sqlite_vec

from jongleur.rag.access import Caller
from jongleur.rag.chunking import ChunkDraft
from jongleur.rag.records import fts_query
from jongleur.rag.store import RagStore, chunk_row

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS collections(
  cid INTEGER PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL DEFAULT '',
  level INTEGER NOT NULL, owner TEXT NOT NULL, embedder TEXT NOT NULL, dims INTEGER NOT NULL,
  created REAL NOT NULL, UNIQUE(tenant, name));
CREATE TABLE IF NOT EXISTS collection_acl(
  cid INTEGER NOT NULL REFERENCES collections(cid) ON DELETE CASCADE, entry TEXT NOT NULL,
  perm TEXT NOT NULL CHECK(perm IN ('read','write')), PRIMARY KEY(cid, entry, perm));
CREATE TABLE IF NOT EXISTS documents(
  did INTEGER PRIMARY KEY, cid INTEGER NOT NULL REFERENCES collections(cid) ON DELETE CASCADE,
  doc_id TEXT NOT NULL, filename TEXT NOT NULL, media_type TEXT NOT NULL, digest TEXT NOT NULL,
  version INTEGER NOT NULL, level INTEGER NOT NULL, size INTEGER NOT NULL, pages INTEGER,
  uploader TEXT NOT NULL, created REAL NOT NULL, findings TEXT NOT NULL DEFAULT '[]', text TEXT NOT NULL,
  UNIQUE(cid, doc_id));
CREATE INDEX IF NOT EXISTS documents_digest ON documents(cid, digest);
CREATE TABLE IF NOT EXISTS document_acl(
  did INTEGER NOT NULL REFERENCES documents(did) ON DELETE CASCADE, entry TEXT NOT NULL, PRIMARY KEY(did, entry));
CREATE TABLE IF NOT EXISTS chunks(
  id INTEGER PRIMARY KEY, did INTEGER NOT NULL REFERENCES documents(did) ON DELETE CASCADE,
  ord INTEGER NOT NULL, text TEXT NOT NULL, heading TEXT NOT NULL, page INTEGER,
  start INTEGER NOT NULL, end INTEGER NOT NULL, tokens INTEGER NOT NULL, flag TEXT, embedding BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS chunks_did ON chunks(did);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, heading, tokenize='porter unicode61 remove_diacritics 2');
CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
  INSERT INTO chunks_fts(rowid, text, heading) VALUES (new.id, new.text, new.heading); END;
CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
  DELETE FROM chunks_fts WHERE rowid = old.id; END;
"""

ACCESS_CTE = """
WITH entries(value) AS (SELECT value FROM json_each(:entries)),
readable AS (
  SELECT c.cid FROM collections c
  WHERE c.tenant = :tenant AND c.level <= :clearance
    AND (:admin OR c.owner = :user OR EXISTS (
          SELECT 1 FROM collection_acl a WHERE a.cid = c.cid AND a.entry IN (SELECT value FROM entries)))
    AND (:allowed IS NULL OR EXISTS (SELECT 1 FROM json_each(:allowed) p WHERE lower(c.name) GLOB lower(p.value)))
    AND (:wanted IS NULL OR c.name IN (SELECT value FROM json_each(:wanted)))),
visible AS (
  SELECT d.did FROM documents d
  WHERE d.cid IN (SELECT cid FROM readable) AND d.level <= :clearance
    AND (:admin OR d.uploader = :user OR NOT EXISTS (SELECT 1 FROM document_acl x WHERE x.did = d.did)
         OR EXISTS (SELECT 1 FROM document_acl x WHERE x.did = d.did AND x.entry IN (SELECT value FROM entries))))
"""


def pack(vector: Sequence[float]) -> bytes:
    return array("f", vector).tobytes()


class _SqliteTx:
    def __init__(self, db: apsw.Connection) -> None:
        self.db = db

    def rows(self, sql: str, args: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return list(self.db.execute(sql, dict(args)))

    def run_many(self, sql: str, args: Sequence[Mapping[str, Any]]) -> None:
        self.db.executemany(sql, [dict(a) for a in args])


class SqliteRagStore(RagStore):
    access_cte = ACCESS_CTE
    integrity_checks: ClassVar[dict[str, str]] = {
        "fts_without_chunk": "SELECT count(*) FROM chunks_fts WHERE rowid NOT IN (SELECT id FROM chunks)",
        "chunks_without_fts": "SELECT count(*) FROM chunks WHERE id NOT IN (SELECT rowid FROM chunks_fts)",
    }

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = apsw.Connection(self.path)
        self._db.enable_load_extension(True)
        self._db.load_extension(sqlite_vec.loadable_path())
        self._db.enable_load_extension(False)
        self._db.set_busy_timeout(10_000)
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA foreign_keys = ON")
            if self.path != ":memory:":
                self._db.execute("PRAGMA journal_mode = WAL")
            with self._db:
                self._db.execute(SCHEMA)
                self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[_SqliteTx]:
        with self._lock, self._db:
            yield _SqliteTx(self._db)

    def _access(self, caller: Caller, wanted: Sequence[str] | None = None) -> dict[str, Any]:
        return {
            "entries": json.dumps(caller.acl_entries()), "tenant": caller.tenant, "clearance": int(caller.clearance),
            "admin": int(caller.is_admin), "user": caller.user,
            "allowed": None if caller.allowed_collections is None else json.dumps(sorted(caller.allowed_collections)),
            "wanted": None if wanted is None else json.dumps(list(wanted)),
        }

    def _insert_chunks(self, tx: _SqliteTx, did: int, chunks: Sequence[ChunkDraft],  # type: ignore[override]
                       embeddings: Sequence[Sequence[float]], flags: Sequence[str | None]) -> None:
        tx.run_many(
            "INSERT INTO chunks(did, ord, text, heading, page, start, end, tokens, flag, embedding) "
            "VALUES (:did, :ord, :text, :heading, :page, :start, :end, :tokens, :flag, :embedding)",
            [chunk_row(did, i, c, flag) | {"embedding": pack(vec)}
             for i, (c, vec, flag) in enumerate(zip(chunks, embeddings, flags, strict=True))])

    def _vector_ids(self, args: dict[str, Any], vector: Sequence[float], k: int) -> list[int]:
        return self._visible_ids("""
            SELECT ch.id FROM chunks ch WHERE ch.did IN (SELECT did FROM visible)
            ORDER BY vec_distance_cosine(ch.embedding, :q) LIMIT :k""", args | {"q": pack(vector), "k": k})

    def _text_ids(self, args: dict[str, Any], text: str, k: int) -> list[int]:
        fq = fts_query(text)
        if not fq:
            return []
        return self._visible_ids("""
            SELECT f.rowid FROM chunks_fts f JOIN chunks ch ON ch.id = f.rowid
            WHERE chunks_fts MATCH :fq AND ch.did IN (SELECT did FROM visible)
            ORDER BY bm25(chunks_fts) LIMIT :k""", args | {"fq": fq, "k": k})
