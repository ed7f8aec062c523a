"""What crosses the RAG store's boundary, whatever the backend: the records it returns, its one
error type, and the pieces of ranking both backends share (the full-text query words and
reciprocal rank fusion), so SQLite and PostgreSQL rank the same way."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from jongleur.rag.access import Level

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


def query_words(text: str) -> list[str]:
    """The distinct words of a user query (at most 64) that full-text search looks for."""
    words = re.findall(r"\w+", text.lower())[:64]
    return list(dict.fromkeys(w for w in words if len(w) > 1 or w.isdigit()))


def fts_query(text: str) -> str | None:
    """User text -> a safe FTS5 query: each word quoted, OR-ed (BM25 ranks the overlap)."""
    words = query_words(text)
    return " OR ".join(f'"{w}"' for w in words) if words else None


@dataclass(frozen=True)
class Fused:
    chunk_id: int
    score: float
    vector_rank: int | None
    text_rank: int | None


def fuse_ranks(vector_ids: list[int], text_ids: list[int], k: int) -> list[Fused]:
    """Reciprocal rank fusion (k=60) of two ranked id lists; ties broken by id for stable output."""
    vec = {cid: i for i, cid in enumerate(vector_ids)}
    txt = {cid: i for i, cid in enumerate(text_ids)}
    scores: dict[int, float] = {}
    for ranks in (vec, txt):
        for cid, rank in ranks.items():
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (RRF_K + rank + 1)
    top = sorted(scores, key=lambda c: (-scores[c], c))[:k]
    return [Fused(c, scores[c], vec.get(c), txt.get(c)) for c in top]
