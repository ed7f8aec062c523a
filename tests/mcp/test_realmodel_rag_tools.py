"""The bundled Qwen2.5-Coder-0.5B-Instruct where the answer matters: an augmented answer cites the
right document, and the server-side tool loop calls an MCP calculator and uses its result.
Few, short requests. The 0.5B model does not call tools reliably on its own, so the first step
is forced with `tool_choice` (the loop itself, the MCP call and the use of the result are real)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from api.server_process import ServerProcess
from rag.corpus import write_corpus
from rag.server import TEAM_A, auth, start_server, upload
from test_mcp_server_e2e import write_config

from jongleur.catalog import bundled

pytestmark = [pytest.mark.realmodel,
              pytest.mark.skipif(not bundled.available(), reason="bundled model packages not installed")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("qwen-rag")
    data_dir = os.environ.get("JONGLEUR_TEST_DATA_DIR", str(Path.home() / ".jongleur"))  # reuse the weight cache
    proc = start_server(tmp, bundled.QWEN_NAME, "--data-dir", data_dir, "--config", str(write_config(tmp)),
                        timeout=900)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def http(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=600, headers=auth(TEAM_A)) as client:
        yield client


def test_augmented_answer_cites_the_right_document(http: httpx.Client, tmp_path: Path) -> None:
    name = f"handbook-{uuid.uuid4().hex[:8]}"
    assert http.post("/v1/collections", json={"name": name}).status_code == 201
    try:
        assert upload(http, name, write_corpus(tmp_path), TEAM_A).status_code == 201
        r = http.post("/v1/chat/completions", json={
            "messages": [{"role": "user", "content": "How many days of paid holiday does an employee get per year?"}],
            "collections": [name], "max_tokens": 40, "temperature": 0})
        assert r.status_code == 200, r.text
        answer = r.json()["choices"][0]["message"]["content"]
        cited = {c["index"]: c["document"] for c in r.json()["citations"]}
        assert "27" in answer, answer
        assert cited[1] == "handbook.md"
        refs = [int(n) for n in __import__("re").findall(r"\[(\d+)\]", answer)]
        assert not refs or all(cited.get(n) == "handbook.md" for n in refs), (answer, cited)
    finally:
        http.delete(f"/v1/collections/{name}")


def test_tool_loop_calls_mcp_and_uses_the_result(http: httpx.Client) -> None:
    tools = {t["id"]: t for t in http.get("/admin/mcp/tools").json()["data"]}
    http.post("/admin/mcp/tools/calc.add/approve", json={"sha256": tools["calc.add"]["sha256"]})
    r = http.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "Use the calculator: what is 38 + 47? Reply with the number."}],
        "mcp_tools": ["calc.add"], "tool_choice": {"type": "function", "function": {"name": "calc.add"}},
        "max_tokens": 40, "temperature": 0})
    assert r.status_code == 200, r.text
    step = r.json()["tool_steps"][0]
    assert step["tool"] == "calc.add" and step["arguments"] == {"a": 38, "b": 47} and step["result"] == "85"
    assert "85" in r.json()["choices"][0]["message"]["content"], json.dumps(r.json())
