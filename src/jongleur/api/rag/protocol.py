"""Pydantic models of the `/v1/collections` routes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from jongleur.api.openai.common import StrictModel
from jongleur.rag.store import CollectionInfo, DocumentInfo, Hit


class CreateCollectionRequest(StrictModel):
    name: str = Field(min_length=1, max_length=64)
    description: str = Field("", max_length=2000)
    level: Literal["public", "internal", "confidential", "secret"] = "internal"
    readers: list[str] = Field(default_factory=list, max_length=256,
                               description="ACL entries that may read: user:<id>, role:<name>, key:<id>, tenant:*")
    writers: list[str] = Field(default_factory=list, max_length=256, description="ACL entries that may upload/delete")
    embedding_model: str | None = Field(None, max_length=256)


class SearchRequest(StrictModel):
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(5, ge=1, le=50)


class Collection(BaseModel):
    id: str
    object: Literal["collection"] = "collection"
    description: str
    level: str
    owner: str
    embedding_model: str
    dimensions: int
    created_at: int
    readers: list[str]
    writers: list[str]
    documents: int
    chunks: int

    @classmethod
    def of(cls, c: CollectionInfo) -> Collection:
        return cls(id=c.name, description=c.description, level=c.level.label, owner=c.owner,
                   embedding_model=c.embedder, dimensions=c.dims, created_at=int(c.created), readers=c.readers,
                   writers=c.writers, documents=c.documents, chunks=c.chunks)


class CollectionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Collection]


class Document(BaseModel):
    id: str
    object: Literal["document"] = "document"
    collection: str
    filename: str
    media_type: str
    sha256: str
    version: int
    level: str
    bytes: int
    pages: int | None
    chunks: int
    created_at: int
    findings: list[str]
    duplicate: bool = False
    replaced_version: int | None = None
    ingest_seconds: float | None = None

    @classmethod
    def of(cls, d: DocumentInfo) -> Document:
        return cls(id=d.doc_id, collection=d.collection, filename=d.filename, media_type=d.media_type,
                   sha256=d.digest, version=d.version, level=d.level.label, bytes=d.size, pages=d.pages,
                   chunks=d.chunks, created_at=int(d.created), findings=d.findings, duplicate=d.duplicate)


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Document]


class SearchHit(BaseModel):
    collection: str
    document: str
    filename: str
    version: int
    page: int | None
    heading_path: list[str]
    start: int
    end: int
    text: str
    score: float
    vector_rank: int | None
    text_rank: int | None
    flagged: str | None = Field(None, description="set when the passage contains instruction-like text")

    @classmethod
    def of(cls, h: Hit) -> SearchHit:
        return cls(collection=h.collection, document=h.doc_id, filename=h.filename, version=h.version, page=h.page,
                   heading_path=h.heading_path, start=h.start, end=h.end, text=h.text, score=round(h.score, 6),
                   vector_rank=h.vector_rank, text_rank=h.text_rank, flagged=h.flag)


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchHit]
