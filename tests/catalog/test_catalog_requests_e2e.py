"""A real server on the model store, driven by the official clients: per-request keep_alive and
/api/ps expiry, the manifest's default sampling, load progress as Server-Sent Events, and store
models loaded on first use by /tokenize. One server for the module."""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import ollama
import openai
import pytest
from api.server_process import ServerProcess
from tiny_model import make_tiny_model_dir

from catalog.fake_hub import Hub, fake_hub, tiny_gguf
from jongleur.catalog.store import ModelStore

GREEDY_BY_DEFAULT = "greedy@1"  # its manifest says temperature 0


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[Hub, str]]:
    with fake_hub() as running:
        yield running


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, hub: tuple[Hub, str]) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("catalog-requests")
    store = ModelStore(tmp / "data" / "models")
    folder = make_tiny_model_dir(tmp / "tiny", "qwen2", seed=1)
    store.import_path(folder, name="greedy", tag="1", sampling={"temperature": 0.0})
    store.import_path(folder, name="tiny", tag="1")
    store.import_path(folder, name="other", tag="1")
    flags = ["--model", "", "--embedding-model", "", "--data-dir", str(tmp / "data"),
             "--kv-cache-memory-mb", "16", "--max-num-seqs", "8", "--memory-budget-mb", "512", "--hub-url", hub[1]]
    proc = ServerProcess.jongleur(*flags, env={"JONGLEUR_ENGINE_MODE": "inprocess"},
                                  log_path=tmp / "server.log").start(timeout=300)
    yield proc
    proc.stop()


def loaded(client: ollama.Client) -> dict[str, ollama.ProcessResponse.Model]:
    return {m.model or "": m for m in client.ps().models}


def wait_until_unloaded(client: ollama.Client, name: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while name in loaded(client):
        assert time.monotonic() < deadline, f"{name} still loaded after {timeout} s"
        time.sleep(0.2)


def test_keep_alive_sets_expiry_and_zero_unloads(server: ServerProcess) -> None:
    client = ollama.Client(host=server.base_url, timeout=120)
    opts = {"num_predict": 2}
    client.generate(model="tiny@1", prompt="hi", keep_alive="10m", options=opts)
    ps = loaded(client)["tiny:1"]
    assert ps.expires_at is not None and ps.size_vram == 0 and (ps.size or 0) > 0
    left = (ps.expires_at - datetime.now(UTC)).total_seconds()
    assert 540 < left <= 601, left  # last use + this request's 10 minutes
    client.chat(model="tiny@1", messages=[{"role": "user", "content": "hi"}], keep_alive=90, options=opts)
    left = (loaded(client)["tiny:1"].expires_at - datetime.now(UTC)).total_seconds()  # type: ignore[operator]
    assert 30 < left <= 91, left
    client.generate(model="tiny@1", prompt="hi", keep_alive=-1, options=opts)
    assert loaded(client)["tiny:1"].expires_at.year == 2999  # type: ignore[union-attr]  # kept loaded
    client.generate(model="tiny@1", prompt="hi", keep_alive=0, options=opts)
    wait_until_unloaded(client, "tiny:1")  # right after the request
    assert client.generate(model="tiny@1").done_reason == "load"  # an empty request loads
    assert "tiny:1" in loaded(client)
    assert client.generate(model="tiny@1", keep_alive=0).done_reason == "unload"  # ... and unloads
    wait_until_unloaded(client, "tiny:1")


@pytest.mark.parametrize("value", ["5 minutes", "abc", "5x", "", "1e9", True, [1], {"s": 5}])
def test_bad_keep_alive_is_a_clear_400(server: ServerProcess, value: object) -> None:
    bodies = {"/api/generate": {"model": "tiny@1", "prompt": "hi"},
              "/api/chat": {"model": "tiny@1", "messages": [{"role": "user", "content": "hi"}]},
              "/api/embed": {"model": "tiny@1", "input": "hi"}}
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        for path, body in bodies.items():
            r = c.post(path, json={**body, "keep_alive": value, "stream": False})
            assert r.status_code == 400, (path, r.text)
            assert "keep_alive" in r.json()["error"], r.text


def test_manifest_default_sampling_applies_and_request_wins(server: ServerProcess) -> None:
    oa = openai.OpenAI(base_url=server.base_url + "/v1", api_key="unused", timeout=120)
    messages = [{"role": "user", "content": "hello"}]

    def chat(seed: int, **kw: float) -> str:
        r = oa.chat.completions.create(model=GREEDY_BY_DEFAULT, messages=messages, max_tokens=12, seed=seed,
                                       extra_body={"ignore_eos": True}, **kw)  # type: ignore[arg-type]
        return r.choices[0].message.content or ""

    greedy = chat(0, temperature=0.0)
    assert {chat(seed) for seed in range(1, 5)} == {greedy}  # unset: the manifest's temperature 0
    assert len({chat(seed, temperature=2.0) for seed in range(1, 5)}) > 1  # explicit: the request's
    client = ollama.Client(host=server.base_url, timeout=120)

    def generate(seed: int, **kw: float) -> str:
        opts = {"seed": seed, "num_predict": 12, **kw}
        return client.generate(model=GREEDY_BY_DEFAULT, prompt="hello", raw=True, options=opts).response

    assert client.show(GREEDY_BY_DEFAULT).parameters == "temperature 0.0"  # as Modelfile PARAMETERs
    ollama_greedy = generate(0, temperature=0.0)
    assert {generate(seed) for seed in range(1, 5)} == {ollama_greedy}  # not Ollama's 0.8
    assert len({generate(seed, temperature=2.0) for seed in range(1, 5)}) > 1


def read_events(base_url: str, out: list[dict], subscribed: threading.Event, until: tuple[str, str]) -> None:
    """Collect `/admin/catalog/events` into `out` until the event `until` = (event, ref) arrives."""
    with httpx.Client(base_url=base_url, timeout=120) as c, c.stream("GET", "/admin/catalog/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith(": subscribed"):
                subscribed.set()
            elif line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                event = json.loads(line[6:])
                assert event["event"] == kind
                out.append(event)
                if (event["event"], event["ref"]) == until:
                    return


@contextlib.contextmanager
def following_events(base_url: str, until: tuple[str, str]) -> Iterator[list[dict]]:
    """Subscribed before the block runs; after it, every event up to `until` is in the list."""
    events: list[dict] = []
    subscribed = threading.Event()
    reader = threading.Thread(target=read_events, args=(base_url, events, subscribed, until))
    reader.start()
    assert subscribed.wait(60)
    yield events
    reader.join(60)
    assert not reader.is_alive(), f"no {until} event: {events}"


def test_load_events_stream_and_tokenize_loads_on_first_use(server: ServerProcess) -> None:
    with following_events(server.base_url, ("unloaded", "other@1")) as events, \
            httpx.Client(base_url=server.base_url, timeout=120) as c:
        r = c.post("/tokenize", json={"model": "other@1", "prompt": "hello world"})  # not loaded yet
        assert r.status_code == 200, r.text
        tokens = r.json()["tokens"]
        assert tokens and r.json()["max_model_len"] > 0
        r = c.post("/detokenize", json={"model": "other@1", "tokens": tokens})
        assert r.status_code == 200 and r.json()["prompt"] == "hello world"
        assert c.post("/admin/models/other@1/unload").status_code == 200
    mine = [(e["event"], e["fraction"]) for e in events if e["ref"] == "other@1"]
    assert mine == [("loading", 0.0), ("ready", 1.0), ("unloaded", None)], events


def test_admin_pull_reports_progress_events(server: ServerProcess, hub: tuple[Hub, str], tmp_path: Path) -> None:
    state, _ = hub
    data = tiny_gguf(tmp_path / "m.gguf")
    state.files["org/tiny-GGUF/m.gguf"] = data
    with following_events(server.base_url, ("pulled", "pulled@1")) as events, \
            httpx.Client(base_url=server.base_url, timeout=120) as c:
        r = c.post("/admin/models/pull", json={"spec": "org/tiny-GGUF:m.gguf", "name": "pulled"})
        assert r.status_code == 200, r.text
        assert r.json()["ref"] == "pulled@1" and r.json()["digest"] == hashlib.sha256(data).hexdigest()
        bad = c.post("/admin/models/pull", json={"spec": "org/x:../../etc/passwd"})
        assert bad.status_code == 400 and "file" in bad.json()["error"]["message"], bad.text  # nothing fetched
    pulling = [e["fraction"] for e in events if e["event"] == "pulling" and e["ref"] == "org/tiny-GGUF:m.gguf"]
    assert pulling and pulling == sorted(pulling) and pulling[-1] == 1.0, events
    assert events[-1]["event"] == "pulled" and events[-1]["fraction"] == 1.0
