"""The embedded RAG store: one SQLite file (apsw + sqlite-vec + FTS5) holding collections, their
ACLs, documents, chunks, vectors and the full-text index.

Access control is part of every query: the `readable` / `visible` CTEs (tenant, clearance,
owner/ACL, per-key collection allow-list, per-document level and reader list) restrict the rows
*before* ranking, so top-k never holds passages the caller may not see, and a result count can
never leak them. Vector search is exact cosine kNN over the visible chunks (sqlite-vec's
`vec_distance_cosine`, ~18 ms per query at 20k×384 here); full text is FTS5 BM25; the two lists
are fused by reciprocal rank fusion.

Integrity: foreign keys cascade from a collection to its documents and from a document to its
chunks; triggers keep the FTS index in step with the chunks table; a replace is one transaction.
"""

from __future__ import annotations

import json
import re
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apsw
import sqlite_vec

from jongleur.rag.access import Caller, Level
from jongleur.rag.chunking import ChunkDraft

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

# the collections and documents a caller may read, as CTEs every query starts with
_ACCESS_CTE = """
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

RRF_K = 60


class StoreError(Exception):
    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def not_found(what: str) -> StoreError:
    return StoreError(f"{what} does not exist", 404, "not_found")


@dataclass
class CollectionInfo:
    cid: int
    name: str
    description: str
    level: Level
    owner: str
    embedder: str
    dims: int
    created: float
    readers: list[str] = field(default_factory=list)
    writers: list[str] = field(default_factory=list)
    documents: int = 0
    chunks: int = 0


@dataclass
class DocumentInfo:
    did: int
    doc_id: str
    filename: str
    media_type: str
    digest: str
    version: int
    level: Level
    size: int
    pages: int | None
    created: float
    findings: list[str]
    chunks: int = 0
    collection: str = ""
    duplicate: bool = False


@dataclass
class Hit:
    chunk_id: int
    collection: str
    doc_id: str
    filename: str
    version: int
    text: str
    heading_path: list[str]
    page: int | None
    start: int
    end: int
    score: float
    vector_rank: int | None
    text_rank: int | None
    flag: str | None


def pack(vector: Sequence[float]) -> bytes:
    return array("f", vector).tobytes()


def fts_query(text: str) -> str | None:
    """User text -> a safe FTS5 query: each word quoted, OR-ed (BM25 ranks the overlap)."""
    words = re.findall(r"\w+", text.lower())[:64]
    words = [w for w in words if len(w) > 1 or w.isdigit()]
    if not words:
        return None
    return " OR ".join(f'"{w}"' for w in dict.fromkeys(words))


class RagStore:
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
    def _tx(self) -> Iterator[apsw.Connection]:
        with self._lock, self._db:
            yield self._db

    def _rows(self, sql: str, args: Any = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._db.execute(sql, args))

    @staticmethod
    def _access(caller: Caller, wanted: Sequence[str] | None = None) -> dict[str, Any]:
        return {
            "entries": json.dumps(caller.acl_entries()), "tenant": caller.tenant, "clearance": int(caller.clearance),
            "admin": int(caller.is_admin), "user": caller.user,
            "allowed": None if caller.allowed_collections is None else json.dumps(sorted(caller.allowed_collections)),
            "wanted": None if wanted is None else json.dumps(list(wanted)),
        }

    # ---- collections ------------------------------------------------------------------------

    def create_collection(self, caller: Caller, name: str, *, description: str = "", level: Level = Level.INTERNAL,
                          readers: Sequence[str] = (), writers: Sequence[str] = (), embedder: str,
                          dims: int) -> CollectionInfo:
        if level > caller.clearance:
            raise StoreError("a collection cannot have a higher level than its creator's clearance", 403,
                             "insufficient_clearance")
        if not caller.may_use_collection(name):
            raise StoreError("this key may not use that collection", 403, "forbidden")
        with self._tx() as db:
            if list(db.execute("SELECT 1 FROM collections WHERE tenant = ? AND name = ?", (caller.tenant, name))):
                raise StoreError(f"the collection {name!r} already exists", 409, "collection_exists")
            db.execute("INSERT INTO collections(tenant, name, description, level, owner, embedder, dims, created) "
                       "VALUES (?,?,?,?,?,?,?,?)",
                       (caller.tenant, name, description, int(level), caller.user, embedder, dims, time.time()))
            cid = db.last_insert_rowid()
            for entry in dict.fromkeys(readers):
                db.execute("INSERT INTO collection_acl VALUES (?,?, 'read')", (cid, entry))
            for entry in dict.fromkeys(writers):
                db.execute("INSERT INTO collection_acl VALUES (?,?, 'write')", (cid, entry))
        return self.get_collection(caller, name)

    def list_collections(self, caller: Caller, wanted: Sequence[str] | None = None) -> list[CollectionInfo]:
        rows = self._rows(_ACCESS_CTE + """
            SELECT c.cid, c.name, c.description, c.level, c.owner, c.embedder, c.dims, c.created,
              (SELECT count(*) FROM documents d WHERE d.cid = c.cid AND d.did IN (SELECT did FROM visible)),
              (SELECT count(*) FROM chunks ch JOIN documents d ON d.did = ch.did
                 WHERE d.cid = c.cid AND d.did IN (SELECT did FROM visible))
            FROM collections c WHERE c.cid IN (SELECT cid FROM readable) ORDER BY c.name""",
                          self._access(caller, wanted))
        out = []
        for r in rows:
            acl = self._rows("SELECT entry, perm FROM collection_acl WHERE cid = ? ORDER BY entry", (r[0],))
            out.append(CollectionInfo(r[0], r[1], r[2], Level(r[3]), r[4], r[5], r[6], r[7],
                                      [e for e, p in acl if p == "read"], [e for e, p in acl if p == "write"],
                                      r[8], r[9]))
        return out

    def get_collection(self, caller: Caller, name: str, *, write: bool = False) -> CollectionInfo:
        found = self.list_collections(caller, [name])
        if not found:
            raise not_found(f"the collection {name!r}")  # unreadable == missing: no existence leak
        info = found[0]
        if write and not self.can_write(caller, info):
            raise StoreError(f"you may read but not change the collection {name!r}", 403, "forbidden")
        return info

    @staticmethod
    def can_write(caller: Caller, info: CollectionInfo) -> bool:
        return caller.is_admin or info.owner == caller.user or bool(set(info.writers) & set(caller.acl_entries()))

    def delete_collection(self, caller: Caller, name: str) -> None:
        info = self.get_collection(caller, name, write=True)
        if not (caller.is_admin or info.owner == caller.user):
            raise StoreError("only the owner or an admin may delete a collection", 403, "forbidden")
        with self._tx() as db:
            db.execute("DELETE FROM collections WHERE cid = ?", (info.cid,))

    # ---- documents --------------------------------------------------------------------------

    def _document_rows(self, caller: Caller, collection: CollectionInfo, doc_id: str | None) -> list[tuple]:
        args = self._access(caller, [collection.name]) | {"cid": collection.cid, "doc": doc_id}
        return self._rows(_ACCESS_CTE + """
            SELECT d.did, d.doc_id, d.filename, d.media_type, d.digest, d.version, d.level, d.size, d.pages,
                   d.created, d.findings, (SELECT count(*) FROM chunks ch WHERE ch.did = d.did)
            FROM documents d WHERE d.cid = :cid AND d.did IN (SELECT did FROM visible)
              AND (:doc IS NULL OR d.doc_id = :doc) ORDER BY d.doc_id""", args)

    @staticmethod
    def _doc(r: tuple, collection: str) -> DocumentInfo:
        return DocumentInfo(r[0], r[1], r[2], r[3], r[4], r[5], Level(r[6]), r[7], r[8], r[9], json.loads(r[10]),
                            r[11], collection)

    def list_documents(self, caller: Caller, collection: CollectionInfo) -> list[DocumentInfo]:
        return [self._doc(r, collection.name) for r in self._document_rows(caller, collection, None)]

    def get_document(self, caller: Caller, collection: CollectionInfo, doc_id: str) -> DocumentInfo:
        rows = self._document_rows(caller, collection, doc_id)
        if not rows:
            raise not_found(f"the document {doc_id!r}")
        return self._doc(rows[0], collection.name)

    def document_text(self, caller: Caller, collection: CollectionInfo, doc_id: str) -> tuple[DocumentInfo, str]:
        info = self.get_document(caller, collection, doc_id)
        return info, self._rows("SELECT text FROM documents WHERE did = ?", (info.did,))[0][0]

    def find_existing(self, collection: CollectionInfo, doc_id: str, digest: str) -> tuple[DocumentInfo | None,
                                                                                           DocumentInfo | None]:
        """(document with this id, document with this digest) in the collection, regardless of caller."""
        def one(where: str, arg: str) -> DocumentInfo | None:
            rows = self._rows(f"""SELECT d.did, d.doc_id, d.filename, d.media_type, d.digest, d.version, d.level,
                d.size, d.pages, d.created, d.findings, (SELECT count(*) FROM chunks ch WHERE ch.did = d.did)
                FROM documents d WHERE d.cid = ? AND {where} = ? LIMIT 1""", (collection.cid, arg))
            return self._doc(rows[0], collection.name) if rows else None
        return one("d.doc_id", doc_id), one("d.digest", digest)

    def put_document(self, caller: Caller, collection: CollectionInfo, *, doc_id: str, filename: str,
                     media_type: str, digest: str, level: Level, size: int, pages: int | None,
                     findings: list[str], text: str, readers: Sequence[str], chunks: Sequence[ChunkDraft],
                     embeddings: Sequence[Sequence[float]], flags: Sequence[str | None],
                     replace: DocumentInfo | None) -> DocumentInfo:
        """Insert a document with its chunks, or replace `replace` (new version), in one transaction."""
        if len(chunks) != len(embeddings) or len(chunks) != len(flags):
            raise ValueError("chunks, embeddings and flags differ in length")
        with self._tx() as db:
            version = 1
            if replace is not None:
                version = replace.version + 1
                db.execute("DELETE FROM documents WHERE did = ?", (replace.did,))  # cascades chunks, fts, acl
            db.execute("""INSERT INTO documents(cid, doc_id, filename, media_type, digest, version, level, size, pages,
                          uploader, created, findings, text) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)""",
                       (collection.cid, doc_id, filename, media_type, digest, version, int(level), size, pages,
                        caller.user, time.time(), json.dumps(findings), text))
            did = db.last_insert_rowid()
            for entry in dict.fromkeys(readers):
                db.execute("INSERT INTO document_acl VALUES (?, ?)", (did, entry))
            db.executemany(
                "INSERT INTO chunks(did, ord, text, heading, page, start, end, tokens, flag, embedding) "
                "VALUES (?,?,?,?,?,?,?,?,?,?)",
                [(did, i, c.text, " > ".join(c.heading_path), c.page, c.start, c.end, c.tokens, flag, pack(vec))
                 for i, (c, vec, flag) in enumerate(zip(chunks, embeddings, flags, strict=True))])
        return self.get_document(caller, collection, doc_id)

    def delete_document(self, caller: Caller, collection: CollectionInfo, doc_id: str) -> DocumentInfo:
        info = self.get_document(caller, collection, doc_id)
        with self._tx() as db:
            db.execute("DELETE FROM documents WHERE did = ?", (info.did,))
        return info

    def integrity(self) -> dict[str, int]:
        """Orphan counts (all zero in a healthy store); tests call it after deletes and replaces."""
        q = {
            "chunks_without_document": "SELECT count(*) FROM chunks WHERE did NOT IN (SELECT did FROM documents)",
            "fts_without_chunk": "SELECT count(*) FROM chunks_fts WHERE rowid NOT IN (SELECT id FROM chunks)",
            "chunks_without_fts": "SELECT count(*) FROM chunks WHERE id NOT IN (SELECT rowid FROM chunks_fts)",
            "documents_without_collection":
                "SELECT count(*) FROM documents WHERE cid NOT IN (SELECT cid FROM collections)",
        }
        return {k: self._rows(sql)[0][0] for k, sql in q.items()}

    # ---- search -----------------------------------------------------------------------------

    def search(self, caller: Caller, collections: Sequence[str] | None, query_vector: Sequence[float] | None,
               query_text: str, k: int = 5, candidates: int = 50) -> list[Hit]:
        """Hybrid search over what `caller` may read in `collections` (None: all it may read)."""
        args = self._access(caller, collections) | {"k": candidates}
        vec_ranks: dict[int, int] = {}
        txt_ranks: dict[int, int] = {}
        if query_vector is not None:
            rows = self._rows(_ACCESS_CTE + """
                SELECT ch.id FROM chunks ch WHERE ch.did IN (SELECT did FROM visible)
                ORDER BY vec_distance_cosine(ch.embedding, :q) LIMIT :k""", args | {"q": pack(query_vector)})
            vec_ranks = {r[0]: i for i, r in enumerate(rows)}
        fq = fts_query(query_text)
        if fq:
            rows = self._rows(_ACCESS_CTE + """
                SELECT f.rowid FROM chunks_fts f JOIN chunks ch ON ch.id = f.rowid
                WHERE chunks_fts MATCH :fq AND ch.did IN (SELECT did FROM visible)
                ORDER BY bm25(chunks_fts) LIMIT :k""", args | {"fq": fq})
            txt_ranks = {r[0]: i for i, r in enumerate(rows)}
        scores: dict[int, float] = {}
        for ranks in (vec_ranks, txt_ranks):
            for cid, rank in ranks.items():
                scores[cid] = scores.get(cid, 0.0) + 1.0 / (RRF_K + rank + 1)
        top = sorted(scores, key=lambda c: (-scores[c], c))[:k]
        if not top:
            return []
        marks = ",".join("?" * len(top))
        rows = self._rows(f"""SELECT ch.id, c.name, d.doc_id, d.filename, d.version, ch.text, ch.heading, ch.page,
                ch.start, ch.end, ch.flag FROM chunks ch JOIN documents d ON d.did = ch.did
                JOIN collections c ON c.cid = d.cid WHERE ch.id IN ({marks})""", top)
        by_id = {r[0]: r for r in rows}
        hits = []
        for cid in top:
            r = by_id[cid]
            hits.append(Hit(r[0], r[1], r[2], r[3], r[4], r[5], r[6].split(" > ") if r[6] else [], r[7], r[8],
                            r[9], scores[cid], vec_ranks.get(cid), txt_ranks.get(cid), r[10]))
        return hits
