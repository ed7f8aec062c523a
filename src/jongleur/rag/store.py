"""`RagStore`: collections, their ACLs, documents, chunks, vectors and the full-text index, with
access control inside every query. Two backends share this logic and differ only in dialect:
`SqliteRagStore` (embedded default: one SQLite file, apsw + sqlite-vec + FTS5) and
`PostgresRagStore` (`rag_database_url = "postgresql+psycopg://..."`: tsvector full text, pgvector
HNSW when the extension is there, exact cosine in SQL otherwise). `open_rag_store` picks one by URL.

Access control: each backend's `access_cte` defines `readable` (collections: tenant, clearance,
owner/ACL, per-key collection allow-list) and `visible` (documents: their own level and reader
list). Queries restrict rows with them *before* ranking, so top-k never holds passages the caller
may not see and a result count never leaks them. The vector list and the full-text list are fused
by reciprocal rank fusion (`records.fuse_ranks`), the same on both backends.

Integrity: foreign keys cascade from a collection to its documents and from a document to its
chunks (and index rows); a replace is one transaction.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar, Protocol

from jongleur.rag.access import Caller, Level
from jongleur.rag.chunking import ChunkDraft
from jongleur.rag.records import CollectionInfo, DocumentInfo, Hit, StoreError, fuse_ranks, not_found

__all__ = ["CollectionInfo", "DocumentInfo", "Hit", "RagStore", "StoreError", "open_rag_store"]

_DOCUMENT_COLUMNS = """d.did, d.doc_id, d.filename, d.media_type, d.digest, d.version, d.level, d.size, d.pages,
    d.created, d.findings, (SELECT count(*) FROM chunks ch WHERE ch.did = d.did)"""


class Tx(Protocol):
    """One open transaction; SQL uses `:name` parameters on both backends."""

    def rows(self, sql: str, args: Mapping[str, Any]) -> list[tuple[Any, ...]]: ...

    def run_many(self, sql: str, args: Sequence[Mapping[str, Any]]) -> None: ...


def chunk_row(did: int, ordinal: int, chunk: ChunkDraft, flag: str | None) -> dict[str, Any]:
    return {"did": did, "ord": ordinal, "text": chunk.text, "heading": " > ".join(chunk.heading_path),
            "page": chunk.page, "start": chunk.start, "end": chunk.end, "tokens": chunk.tokens, "flag": flag}


class RagStore(ABC):
    access_cte: str

    # ---- what a backend provides -----------------------------------------------------------

    @abstractmethod
    def _tx(self) -> AbstractContextManager[Tx]: ...

    @abstractmethod
    def _access(self, caller: Caller, wanted: Sequence[str] | None = None) -> dict[str, Any]:
        """The parameters of `access_cte` for this caller."""

    @abstractmethod
    def _insert_chunks(self, tx: Tx, did: int, chunks: Sequence[ChunkDraft],
                       embeddings: Sequence[Sequence[float]], flags: Sequence[str | None]) -> None: ...

    @abstractmethod
    def _vector_ids(self, args: dict[str, Any], vector: Sequence[float], k: int) -> list[int]:
        """Chunk ids of `visible` (args: the access parameters), nearest first by cosine."""

    @abstractmethod
    def _text_ids(self, args: dict[str, Any], text: str, k: int) -> list[int]:
        """Chunk ids of `visible` matching the query words, best full-text rank first."""

    #: backend-specific orphan checks (name -> SQL counting them), beside the shared ones
    integrity_checks: ClassVar[dict[str, str]] = {}

    def integrity(self) -> dict[str, int]:
        """Orphan counts (all zero in a healthy store); tests call it after deletes and replaces."""
        checks = {
            "chunks_without_document": "SELECT count(*) FROM chunks WHERE did NOT IN (SELECT did FROM documents)",
            "documents_without_collection":
                "SELECT count(*) FROM documents WHERE cid NOT IN (SELECT cid FROM collections)",
        } | self.integrity_checks
        return {name: self._rows(sql)[0][0] for name, sql in checks.items()}

    @abstractmethod
    def close(self) -> None: ...

    def _rows(self, sql: str, args: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self._tx() as tx:
            return tx.rows(sql, args or {})

    def _visible_ids(self, select: str, args: Mapping[str, Any]) -> list[int]:
        """The first column of `select` run after the access CTEs (so it may use `visible`)."""
        return [r[0] for r in self._rows(self.access_cte + select, args)]

    # ---- collections ------------------------------------------------------------------------

    def create_collection(self, caller: Caller, name: str, *, description: str = "", level: Level = Level.INTERNAL,
                          readers: Sequence[str] = (), writers: Sequence[str] = (), embedder: str,
                          dims: int) -> CollectionInfo:
        if level > caller.clearance:
            raise StoreError("a collection cannot have a higher level than its creator's clearance", 403,
                             "insufficient_clearance")
        if not caller.may_use_collection(name):
            raise StoreError("this key may not use that collection", 403, "forbidden")
        with self._tx() as tx:
            if tx.rows("SELECT 1 FROM collections WHERE tenant = :tenant AND name = :name",
                       {"tenant": caller.tenant, "name": name}):
                raise StoreError(f"the collection {name!r} already exists", 409, "collection_exists")
            cid = tx.rows("INSERT INTO collections(tenant, name, description, level, owner, embedder, dims, created) "
                          "VALUES (:tenant, :name, :description, :level, :owner, :embedder, :dims, :created) "
                          "RETURNING cid",
                          {"tenant": caller.tenant, "name": name, "description": description, "level": int(level),
                           "owner": caller.user, "embedder": embedder, "dims": dims, "created": time.time()})[0][0]
            acl = [{"cid": cid, "entry": e, "perm": "read"} for e in dict.fromkeys(readers)]
            acl += [{"cid": cid, "entry": e, "perm": "write"} for e in dict.fromkeys(writers)]
            if acl:
                tx.run_many("INSERT INTO collection_acl(cid, entry, perm) VALUES (:cid, :entry, :perm)", acl)
        return self.get_collection(caller, name)

    def list_collections(self, caller: Caller, wanted: Sequence[str] | None = None) -> list[CollectionInfo]:
        rows = self._rows(self.access_cte + """
            SELECT c.cid, c.name, c.description, c.level, c.owner, c.embedder, c.dims, c.created,
              (SELECT count(*) FROM documents d WHERE d.cid = c.cid AND d.did IN (SELECT did FROM visible)),
              (SELECT count(*) FROM chunks ch JOIN documents d ON d.did = ch.did
                 WHERE d.cid = c.cid AND d.did IN (SELECT did FROM visible))
            FROM collections c WHERE c.cid IN (SELECT cid FROM readable) ORDER BY c.name""",
                          self._access(caller, wanted))
        out = []
        for r in rows:
            acl = self._rows("SELECT entry, perm FROM collection_acl WHERE cid = :cid ORDER BY entry", {"cid": r[0]})
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
        with self._tx() as tx:
            tx.rows("DELETE FROM collections WHERE cid = :cid", {"cid": info.cid})

    # ---- documents --------------------------------------------------------------------------

    def _document_rows(self, caller: Caller, collection: CollectionInfo, doc_id: str | None) -> list[tuple]:
        args = self._access(caller, [collection.name]) | {"cid": collection.cid, "doc": doc_id}
        return self._rows(self.access_cte + f"""
            SELECT {_DOCUMENT_COLUMNS}
            FROM documents d WHERE d.cid = :cid AND d.did IN (SELECT did FROM visible)
              AND (CAST(:doc AS TEXT) IS NULL OR d.doc_id = :doc) ORDER BY d.doc_id""", args)

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
        return info, self._rows("SELECT text FROM documents WHERE did = :did", {"did": info.did})[0][0]

    def find_existing(self, collection: CollectionInfo, doc_id: str, digest: str) -> tuple[DocumentInfo | None,
                                                                                           DocumentInfo | None]:
        """(document with this id, document with this digest) in the collection, regardless of caller."""
        def one(column: str, value: str) -> DocumentInfo | None:
            rows = self._rows(f"SELECT {_DOCUMENT_COLUMNS} FROM documents d WHERE d.cid = :cid AND d.{column} = :v "
                              "LIMIT 1", {"cid": collection.cid, "v": value})
            return self._doc(rows[0], collection.name) if rows else None
        return one("doc_id", doc_id), one("digest", digest)

    def put_document(self, caller: Caller, collection: CollectionInfo, *, doc_id: str, filename: str,
                     media_type: str, digest: str, level: Level, size: int, pages: int | None,
                     findings: list[str], text: str, readers: Sequence[str], chunks: Sequence[ChunkDraft],
                     embeddings: Sequence[Sequence[float]], flags: Sequence[str | None],
                     replace: DocumentInfo | None) -> DocumentInfo:
        """Insert a document with its chunks, or replace `replace` (new version), in one transaction."""
        if len(chunks) != len(embeddings) or len(chunks) != len(flags):
            raise ValueError("chunks, embeddings and flags differ in length")
        with self._tx() as tx:
            version = 1
            if replace is not None:
                version = replace.version + 1
                tx.rows("DELETE FROM documents WHERE did = :did", {"did": replace.did})  # cascades chunks, acl
            did = tx.rows("""INSERT INTO documents(cid, doc_id, filename, media_type, digest, version, level, size,
                             pages, uploader, created, findings, text)
                             VALUES (:cid, :doc_id, :filename, :media_type, :digest, :version, :level, :size,
                             :pages, :uploader, :created, :findings, :text) RETURNING did""",
                          {"cid": collection.cid, "doc_id": doc_id, "filename": filename, "media_type": media_type,
                           "digest": digest, "version": version, "level": int(level), "size": size, "pages": pages,
                           "uploader": caller.user, "created": time.time(), "findings": json.dumps(findings),
                           "text": text})[0][0]
            if readers:
                tx.run_many("INSERT INTO document_acl(did, entry) VALUES (:did, :entry)",
                            [{"did": did, "entry": e} for e in dict.fromkeys(readers)])
            if chunks:
                self._insert_chunks(tx, did, chunks, embeddings, flags)
        return self.get_document(caller, collection, doc_id)

    def delete_document(self, caller: Caller, collection: CollectionInfo, doc_id: str) -> DocumentInfo:
        info = self.get_document(caller, collection, doc_id)
        with self._tx() as tx:
            tx.rows("DELETE FROM documents WHERE did = :did", {"did": info.did})
        return info

    # ---- search -----------------------------------------------------------------------------

    def search(self, caller: Caller, collections: Sequence[str] | None, query_vector: Sequence[float] | None,
               query_text: str, k: int = 5, candidates: int = 50) -> list[Hit]:
        """Hybrid search over what `caller` may read in `collections` (None: all it may read)."""
        args = self._access(caller, collections)
        vector_ids = self._vector_ids(args, query_vector, candidates) if query_vector is not None else []
        text_ids = self._text_ids(args, query_text, candidates)
        fused = fuse_ranks(vector_ids, text_ids, k)
        if not fused:
            return []
        marks = ", ".join(f":id{i}" for i in range(len(fused)))
        rows = self._rows(f"""SELECT ch.id, c.name, d.doc_id, d.filename, d.version, ch.text, ch.heading, ch.page,
                ch.start, ch."end", ch.flag FROM chunks ch JOIN documents d ON d.did = ch.did
                JOIN collections c ON c.cid = d.cid WHERE ch.id IN ({marks})""",
                          {f"id{i}": f.chunk_id for i, f in enumerate(fused)})
        by_id = {r[0]: r for r in rows}
        return [Hit(r[0], r[1], r[2], r[3], r[4], r[5], r[6].split(" > ") if r[6] else [], r[7], r[8], r[9],
                    f.score, f.vector_rank, f.text_rank, r[10])
                for f in fused if (r := by_id.get(f.chunk_id)) is not None]


def open_rag_store(url: str | None, data_dir: str | Path) -> RagStore:
    """The store a URL names: empty -> `<data_dir>/rag.sqlite`; `sqlite:///path`; `postgresql[+psycopg]://...`."""
    url = (url or "").strip()
    if not url:
        from jongleur.rag.sqlite_store import SqliteRagStore
        return SqliteRagStore(Path(data_dir) / "rag.sqlite")
    if url.startswith("sqlite:///"):
        from jongleur.rag.sqlite_store import SqliteRagStore
        return SqliteRagStore(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql:", "postgresql+psycopg:", "postgres:")):
        from jongleur.rag.pg_store import PostgresRagStore
        return PostgresRagStore(url)
    raise StoreError("the document store is misconfigured: rag_database_url must be sqlite:///PATH or "
                     "postgresql+psycopg://...", 503, "store_unavailable")
