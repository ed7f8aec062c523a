"""End to end through a real server process with the fake engine, driven by the official clients."""

from __future__ import annotations

import json
import time

import httpx
import ollama
import openai
import pytest

from api.server_process import ServerProcess

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def client(fake_server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake_server.base_url + "/v1", api_key="x", max_retries=0)


def running(server: ServerProcess) -> float:
    for line in httpx.get(server.base_url + "/metrics").text.splitlines():
        if line.startswith("jongleur_num_requests_running{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def wait_idle(server: ServerProcess, within: float = 1.0) -> None:
    deadline = time.monotonic() + within
    while running(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running(server) == 0


def test_chat_plain(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}])
    assert r.choices[0].message.content == "Hello, world!"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage is not None and r.usage.completion_tokens > 0
    assert r.model_extra["context"]["window"] == 512


def test_chat_stream_with_usage_and_parts(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="fake-alias", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": [{"type": "text", "text": "UNICODE please"}]}],
    )
    text, usage, finish = "", None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    assert text == "héllo wörld ✓ 日本"
    assert finish == "stop" and usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_n2_logprobs_stop_max_completion_tokens(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}], n=2,
                                       logprobs=True, top_logprobs=2, stop=[","], max_completion_tokens=50)
    assert [c.message.content for c in r.choices] == ["Hello", "Hello"]
    lp = r.choices[0].logprobs.content
    assert lp[0].token == "H" and len(lp[0].top_logprobs) == 2


def test_length_finish(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}], max_tokens=3)
    assert r.choices[0].message.content == "Hel" and r.choices[0].finish_reason == "length"


def test_tools_auto_and_forced(client: openai.OpenAI) -> None:
    r = client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "TOOL"}], tools=TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    assert r.choices[0].finish_reason == "tool_calls"
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        r = client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}],
                                           tools=TOOLS, tool_choice=choice)
        assert r.choices[0].message.tool_calls[0].function.name == "get_weather"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}], tools=TOOLS,
                                       tool_choice={"type": "function", "function": {"name": "nope"}})
    assert e.value.body["param"] == "tool_choice"


def test_tools_streaming(client: openai.OpenAI) -> None:
    calls, text = [], ""
    for chunk in client.chat.completions.create(model="fake-chat", stream=True, tools=TOOLS,
                                                messages=[{"role": "user", "content": "TOOL"}]):
        for c in chunk.choices:
            text += c.delta.content or ""
            calls += c.delta.tool_calls or []
    assert text == "Sure." and calls[0].function.name == "get_weather"


def test_json_schema_output(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    r = client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}],
                                       response_format={"type": "json_schema",
                                                        "json_schema": {"name": "x", "schema": schema}})
    assert json.loads(r.choices[0].message.content) == {"city": "Paris"}


def test_completions_token_prompt_echo_logprobs(client: openai.OpenAI) -> None:
    ids = [ord(c) + 3 for c in "abc"]
    r = client.completions.create(model="fake-chat", prompt=ids, max_tokens=1, echo=True, logprobs=1, temperature=0)
    c = r.choices[0]
    assert c.text == "abcH"
    assert c.logprobs.tokens == ["a", "b", "c", "H"] and c.logprobs.token_logprobs[0] is None
    r = client.completions.create(model="fake-chat", prompt=["x", "y"], max_tokens=2)
    assert [c.text for c in r.choices] == ["He", "He"] and r.usage.prompt_tokens == 2


def test_context_length_exceeded(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "x" * 600}])
    assert e.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="fake-chat", prompt="hi", max_tokens=100_000)
    assert e.value.body["param"] == "max_tokens"


def test_models_and_unknown_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list().data] == ["fake-chat"]
    assert client.models.retrieve("fake-alias").id == "fake-chat"
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])


def test_ollama_client(fake_server: ServerProcess) -> None:
    c = ollama.Client(host=fake_server.base_url)
    assert c.chat(model="fake-chat", messages=[{"role": "user", "content": "hi"}]).message.content == "Hello, world!"
    parts = [p.message.content for p in c.chat(model="fake-chat", messages=[{"role": "user", "content": "hi"}],
                                                stream=True)]
    assert "".join(parts) == "Hello, world!"
    assert c.generate(model="fake-chat", prompt="hi", options={"num_predict": 4}).response == "Hell"
    r = c.chat(model="fake-chat", messages=[{"role": "user", "content": "TOOL"}], tools=TOOLS)
    assert r.message.tool_calls[0].function.arguments == {"city": "Paris"}
    assert json.loads(c.chat(model="fake-chat", messages=[{"role": "user", "content": "hi"}],
                             format="json").message.content) == {"answer": 42}
    assert c.list().models[0].model == "fake-chat:latest"
    assert c.ps().models[0].name == "fake-chat:latest"
    assert c.show("fake-chat").details is not None
    with pytest.raises(ollama.ResponseError) as e:
        c.chat(model="missing", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404
    assert httpx.get(fake_server.base_url + "/api/version").json()["version"]


def test_disconnect_streaming_aborts(fake_server: ServerProcess) -> None:
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": "SLOW"}], "stream": True, "max_tokens": 400}
    with httpx.stream("POST", fake_server.base_url + "/v1/chat/completions", json=body) as r:
        lines = r.iter_lines()
        next(lines), next(lines)
        assert running(fake_server) == 1
    wait_idle(fake_server)


def test_disconnect_non_streaming_aborts(fake_server: ServerProcess) -> None:
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": "SLOW"}], "max_tokens": 400}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(fake_server.base_url + "/v1/chat/completions", json=body, timeout=0.3)
    wait_idle(fake_server)


def test_stream_error_bodies_valid_utf8(fake_server: ServerProcess) -> None:
    body = {"model": "fake-chat", "prompt": "UNICODE", "stream": True, "max_tokens": 40}
    with httpx.stream("POST", fake_server.base_url + "/v1/completions", json=body) as r:
        raw = [line for line in r.iter_bytes()]
    payloads = b"".join(raw).decode("utf-8").split("\n\n")
    texts = [json.loads(p[6:])["choices"][0]["text"] for p in payloads if p.startswith("data: {")]
    assert "".join(texts) == "héllo wörld ✓ 日本" and "\ufffd" not in "".join(texts)


def test_overload_429(tmp_log) -> None:
    server = ServerProcess.fake("--max-active", "1", log_path=tmp_log).start()
    try:
        body = {"model": "fake-chat", "messages": [{"role": "user", "content": "SLOW"}], "stream": True, "max_tokens": 400}
        with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()  # keep a reference: a dropped iterator closes the stream
            next(lines)
            c = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
            with pytest.raises(openai.RateLimitError) as e:
                c.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}])
            assert int(e.value.response.headers["retry-after"]) >= 1
        wait_idle(server)
        assert c.chat.completions.create(model="fake-chat", messages=[{"role": "user", "content": "hi"}]).choices
    finally:
        server.stop()


def test_sigterm_drains(tmp_log) -> None:
    server = ServerProcess.fake(log_path=tmp_log).start()
    body = {"model": "fake-chat", "messages": [{"role": "user", "content": "SLOW"}], "stream": True, "max_tokens": 150}
    try:
        with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body) as r:
            lines = r.iter_lines()
            next(lines)
            server.terminate()
            time.sleep(0.3)
            assert httpx.get(server.base_url + "/ready").status_code == 503
            refused = httpx.post(server.base_url + "/v1/chat/completions", json={"messages": [
                {"role": "user", "content": "hi"}]})
            assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
            rest = list(lines)
        assert "data: [DONE]" in rest
        assert server.proc is not None and server.proc.wait(15) == 0
    finally:
        server.stop()


def test_cli_run_and_models_ls(fake_server: ServerProcess) -> None:
    import subprocess
    import sys

    cli = [sys.executable, "-m", "jongleur.cli"]
    out = subprocess.run([*cli, "run", "fake-chat", "hi", "--url", fake_server.base_url], capture_output=True,
                         text=True, timeout=60, check=True)
    assert out.stdout.strip() == "Hello, world!"
    out = subprocess.run([*cli, "models", "ls", "--url", fake_server.base_url], capture_output=True, text=True,
                         timeout=60, check=True)
    assert "fake-chat" in out.stdout
    out = subprocess.run([*cli, "chat", "--url", fake_server.base_url], input="hi\n/bye\n", capture_output=True,
                         text=True, timeout=60, check=True)
    assert "Hello, world!" in out.stdout
