"""`RagService`: the one entry point the API, MCP and CLI layers use for collections.

It ties parsing, chunking, injection flags, batched embeddings and the store together. Blocking
work (parsing, embedding, SQLite) runs in worker threads so the event loop stays free. Embedding
models are looked up by name through `embedders` (the served embedding models), so each
collection keeps the model it was created with.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from tokenizers import Tokenizer

from jongleur.rag.access import Caller, Level, check_acl_entry
from jongleur.rag.chunking import chunk_blocks
from jongleur.rag.injection import find_injection
from jongleur.rag.parsing import DocumentError, parse_document
from jongleur.rag.store import CollectionInfo, DocumentInfo, Hit, RagStore, StoreError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


@dataclass(frozen=True)
class RagLimits:
    max_document_bytes: int = 10 * 1024 * 1024
    max_document_chars: int = 2_000_000
    max_pdf_pages: int = 2000
    chunk_tokens: int = 200
    chunk_overlap_tokens: int = 32
    max_k: int = 50


@dataclass
class IngestReport:
    document: DocumentInfo
    chunks: int
    seconds: float
    replaced_version: int | None = None


def check_name(name: str, what: str) -> str:
    if not NAME_RE.match(name or "") or ".." in name:
        raise StoreError(f"invalid {what} {name!r}: 1-64 letters, digits, '.', '_' or '-', not starting with "
                         "a symbol", 400, "invalid_name")
    return name


def doc_id_from_filename(filename: str) -> str:
    base = PurePath(filename.replace("\\", "/")).name or "document"
    slug = re.sub(r"[^A-Za-z0-9_.\-]+", "-", base).strip("-.") or "document"
    return slug[:64]


class _Counter:
    """Batched, non-truncating token counts with an embedder's tokenizer."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tok = Tokenizer.from_str(tokenizer.to_str())
        self.tok.no_truncation()
        self.tok.no_padding()

    def __call__(self, texts: list[str]) -> list[int]:
        return [len(e.ids) for e in self.tok.encode_batch(texts)] if texts else []


class RagService:
    def __init__(self, store: RagStore, embedders: Callable[[str | None], Any], limits: RagLimits | None = None,
                 ) -> None:
        """`embedders(name)` returns an `Embedder` (name None: the default one) or raises LookupError."""
        self.store = store
        self.embedders = embedders
        self.limits = limits or RagLimits()
        self._counters: dict[int, _Counter] = {}

    def _embedder(self, name: str | None) -> Any:
        try:
            return self.embedders(name)
        except LookupError as exc:
            raise StoreError(str(exc) or "no embedding model is loaded", 503, "embedding_model_unavailable") from None

    def _counter(self, embedder: Any) -> _Counter:
        key = id(embedder)
        if key not in self._counters:
            self._counters[key] = _Counter(embedder.tokenizer)
        return self._counters[key]

    # ---- collections ------------------------------------------------------------------------

    async def create_collection(self, caller: Caller, name: str, *, description: str = "",
                                level: str | int | None = None, readers: Sequence[str] = (),
                                writers: Sequence[str] = (), embedding_model: str | None = None) -> CollectionInfo:
        check_name(name, "collection name")
        try:
            lvl = Level.parse(level, Level.INTERNAL)
            readers = [check_acl_entry(e) for e in readers]
            writers = [check_acl_entry(e) for e in writers]
        except ValueError as exc:
            raise StoreError(str(exc), 400, "invalid_value") from None
        embedder = self._embedder(embedding_model)
        return await asyncio.to_thread(
            self.store.create_collection, caller, name, description=description[:2000], level=lvl,
            readers=readers, writers=writers, embedder=embedder.name or "default", dims=embedder.dimensions)

    async def list_collections(self, caller: Caller) -> list[CollectionInfo]:
        return await asyncio.to_thread(self.store.list_collections, caller)

    async def get_collection(self, caller: Caller, name: str) -> CollectionInfo:
        return await asyncio.to_thread(self.store.get_collection, caller, name)

    async def delete_collection(self, caller: Caller, name: str) -> None:
        await asyncio.to_thread(self.store.delete_collection, caller, name)

    # ---- documents --------------------------------------------------------------------------

    async def ingest(self, caller: Caller, collection: str, filename: str, data: bytes, *,
                     content_type: str | None = None, doc_id: str | None = None, replace: bool = False,
                     level: str | int | None = None, readers: Sequence[str] = ()) -> IngestReport:
        return await asyncio.to_thread(self.ingest_sync, caller, collection, filename, data,
                                       content_type=content_type, doc_id=doc_id, replace=replace, level=level,
                                       readers=readers)

    def ingest_sync(self, caller: Caller, collection: str, filename: str, data: bytes, *,
                    content_type: str | None = None, doc_id: str | None = None, replace: bool = False,
                    level: str | int | None = None, readers: Sequence[str] = ()) -> IngestReport:
        started = time.perf_counter()
        info = self.store.get_collection(caller, collection, write=True)
        lim = self.limits
        if len(data) > lim.max_document_bytes:
            raise DocumentError(f"the file is larger than {lim.max_document_bytes} bytes", 413, "document_too_large")
        doc_id = check_name(doc_id or doc_id_from_filename(filename), "document id")
        try:
            lvl = max(info.level, Level.parse(level, info.level))  # a document may tighten, never loosen
            readers = [check_acl_entry(e) for e in readers]
        except ValueError as exc:
            raise StoreError(str(exc), 400, "invalid_value") from None
        if lvl > caller.clearance:
            raise StoreError("a document cannot have a higher level than its uploader's clearance", 403,
                             "insufficient_clearance")
        digest = hashlib.sha256(data).hexdigest()
        same_id, same_digest = self.store.find_existing(info, doc_id, digest)
        if same_digest is not None and (same_digest.doc_id == doc_id or not replace):
            same_digest.duplicate = True
            return IngestReport(same_digest, same_digest.chunks, time.perf_counter() - started)
        if same_id is not None and not replace:
            raise StoreError(f"the document {doc_id!r} exists; set replace=true to upload a new version", 409,
                             "document_exists")
        parsed = parse_document(filename, data, content_type, max_chars=lim.max_document_chars,
                                max_pages=lim.max_pdf_pages)
        embedder = self._embedder(info.embedder)
        drafts = chunk_blocks(parsed.blocks, self._counter(embedder), lim.chunk_tokens, lim.chunk_overlap_tokens)
        flags = [find_injection(c.text) for c in drafts]
        findings = list(parsed.findings) + (["instructions_in_text"] if any(flags) else [])
        vectors = embedder.embed([c.embed_text for c in drafts]).vectors if drafts else []
        doc = self.store.put_document(
            caller, info, doc_id=doc_id, filename=PurePath(filename.replace("\\", "/")).name[:255] or doc_id,
            media_type=parsed.media_type, digest=digest, level=lvl, size=len(data), pages=parsed.pages,
            findings=findings, text=parsed.text, readers=readers, chunks=drafts, embeddings=vectors, flags=flags,
            replace=same_id)
        return IngestReport(doc, len(drafts), time.perf_counter() - started,
                            same_id.version if same_id is not None else None)

    async def list_documents(self, caller: Caller, collection: str) -> list[DocumentInfo]:
        def run() -> list[DocumentInfo]:
            return self.store.list_documents(caller, self.store.get_collection(caller, collection))
        return await asyncio.to_thread(run)

    async def read_document(self, caller: Caller, collection: str, doc_id: str) -> tuple[DocumentInfo, str]:
        def run() -> tuple[DocumentInfo, str]:
            return self.store.document_text(caller, self.store.get_collection(caller, collection), doc_id)
        return await asyncio.to_thread(run)

    async def delete_document(self, caller: Caller, collection: str, doc_id: str) -> DocumentInfo:
        def run() -> DocumentInfo:
            return self.store.delete_document(caller, self.store.get_collection(caller, collection, write=True),
                                              doc_id)
        return await asyncio.to_thread(run)

    # ---- search -----------------------------------------------------------------------------

    async def search(self, caller: Caller, collections: Sequence[str] | None, query: str, k: int = 5) -> list[Hit]:
        return await asyncio.to_thread(self.search_sync, caller, collections, query, k)

    def search_sync(self, caller: Caller, collections: Sequence[str] | None, query: str, k: int = 5) -> list[Hit]:
        if not query.strip():
            raise StoreError("the query is empty", 400, "invalid_value")
        k = max(1, min(k, self.limits.max_k))
        names = list(collections) if collections is not None else None
        if names is not None:
            for n in names:
                check_name(n, "collection name")
            visible = self.store.list_collections(caller, names)
            missing = sorted(set(names) - {c.name for c in visible})
            if missing:
                raise StoreError(f"the collection {missing[0]!r} does not exist", 404, "not_found")
        else:
            visible = self.store.list_collections(caller)
        hits: list[Hit] = []
        # collections embedded with different models are searched per model, then fused by score
        by_model: dict[str, list[str]] = {}
        for c in visible:
            by_model.setdefault(c.embedder, []).append(c.name)
        for model, group in by_model.items():
            vector = self._embedder(model).embed([query[:4000]]).vectors[0]
            hits += self.store.search(caller, group, vector, query, k=k, candidates=max(50, k * 4))
        hits.sort(key=lambda h: -h.score)
        return hits[:k]
