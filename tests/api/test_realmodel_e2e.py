"""The bundled Qwen2.5-Coder-0.5B-Instruct behind a real `jongleur serve`, driven by `openai` and
`ollama`. Few, short requests: the model is real, the machine is small."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from api.server_process import ServerProcess
from jongleur.catalog import bundled

pytestmark = [pytest.mark.realmodel,
              pytest.mark.skipif(not bundled.available(), reason="bundled model packages not installed")]

MODEL = bundled.QWEN_NAME
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Get the weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("qwen-serve")
    data_dir = os.environ.get("JONGLEUR_TEST_DATA_DIR", str(Path.home() / ".jongleur"))  # reuse the weight cache
    flags = ["--data-dir", data_dir, "--kv-cache-memory-mb", "256", "--max-num-seqs", "4", "--max-queue", "2",
             "--drain-grace-s", "60"]
    proc = ServerProcess.jongleur(*flags, log_path=tmp / "server.log").start(timeout=900)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0, timeout=300)


def metric(server: ServerProcess, name: str) -> float:
    for line in httpx.get(server.base_url + "/metrics", timeout=30).text.splitlines():
        if line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def ask(client: openai.OpenAI, content: str, **kw: object) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": content}], **kw)


def test_chat_plain_stream_stop_seed(client: openai.OpenAI) -> None:
    r = ask(client, "What is the capital of France? One word.", max_tokens=5, temperature=0)
    assert "paris" in r.choices[0].message.content.lower()
    text = "".join(c.choices[0].delta.content or "" for c in ask(
        client, "Count from 1 to 9, separated by spaces.", max_tokens=20, temperature=0, stream=True,
        stop=["5"]) if c.choices)
    assert "4" in text and "5" not in text
    one, two = (ask(client, "Invent a word.", max_tokens=6, temperature=1.0, seed=7).choices[0].message.content
                for _ in range(2))
    assert one == two
    r = ask(client, "Say hi.", max_tokens=4, n=2, logprobs=True, top_logprobs=2)
    assert len(r.choices) == 2 and len(r.choices[0].logprobs.content[0].top_logprobs) == 2


def test_tools_and_json_schema(client: openai.OpenAI) -> None:
    r = ask(client, "What is the weather in Paris?", tools=TOOLS, max_tokens=40, temperature=0)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and "paris" in json.loads(call.function.arguments)["city"].lower()
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 12},
              "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"],
              "additionalProperties": False}
    r = ask(client, "Invent a person as JSON.", max_tokens=40, temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "p", "schema": schema}})
    person = json.loads(r.choices[0].message.content)
    assert set(person) == {"name", "age"} and 0 <= person["age"] <= 120


def test_ollama_and_embeddings(server: ServerProcess, client: openai.OpenAI) -> None:
    oc = ollama.Client(host=server.base_url, timeout=300)
    text = "".join(p.message.content for p in oc.chat(model=MODEL, stream=True, options={
        "num_predict": 4, "temperature": 0}, messages=[{"role": "user", "content": "2+2=? Answer with a digit."}]))
    assert "4" in text
    emb = oc.embed(model=bundled.MINILM_NAME, input=["hello", "world"])
    assert len(emb.embeddings) == 2 and len(emb.embeddings[0]) == 384
    assert len(client.embeddings.create(model=bundled.MINILM_NAME, input="hi").data[0].embedding) == 384


async def test_disconnect_frees_kv(server: ServerProcess) -> None:
    """Clients that leave, running or queued, abort their requests: the KV cache empties.
    (Overload -> 429 is covered through the API with the fake engine: test_fake_e2e.)"""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Write a long story."}], "max_tokens": 300,
            "stream": True}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=300) as http:
        async def hold() -> None:
            async with http.stream("POST", "/v1/chat/completions", json=body) as r:
                async for _ in r.aiter_lines():
                    pass

        tasks = [asyncio.create_task(hold()) for _ in range(3)]
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if await asyncio.to_thread(metric, server, "jongleur_kv_cache_usage_ratio") > 0:
                    break
                await asyncio.sleep(0.2)
            assert await asyncio.to_thread(metric, server, "jongleur_kv_cache_usage_ratio") > 0
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    deadline = time.monotonic() + 5
    while await asyncio.to_thread(metric, server, "jongleur_kv_cache_usage_ratio") > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert metric(server, "jongleur_kv_cache_usage_ratio") == 0


def test_sigterm_drains_last(server: ServerProcess) -> None:
    # Long enough (no EOS) that the drain outlasts the readiness check below.
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count to 20."}], "max_tokens": 48,
            "ignore_eos": True, "stream": True}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=300) as r:
        lines = r.iter_lines()
        next(lines)
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert httpx.get(server.base_url + "/ready").status_code == 503
        assert "data: [DONE]" in list(lines)
    assert server.proc.wait(120) == 0
