"""Overload and shutdown of a real `jongleur serve` on the tiny random-weight model.

One server with one sequence slot and a queue of one: a full queue answers 429 with Retry-After,
then SIGTERM drains it (in-flight stream finishes with [DONE], new requests 503, exit 0). The
SIGTERM test ends the server, so it runs last.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from api.server_process import ServerProcess

LONG = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 480, "ignore_eos": True,
        "stream": True}


@pytest.fixture(scope="module")
def server(tiny_qwen2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("tiny-overload")
    flags = ["--model", str(tiny_qwen2_dir), "--served-model-name", "tiny", "--embedding-model", "",
             "--data-dir", str(tmp / "data"), "--kv-cache-memory-mb", "32", "--max-num-seqs", "1",
             "--max-queue", "1", "--drain-grace-s", "60"]
    proc = ServerProcess.jongleur(*flags, log_path=tmp / "server.log").start(timeout=300)
    yield proc
    proc.stop()


def wait_for(server: ServerProcess, name: str, value: float, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while server.metric(name) != value:
        assert time.monotonic() < deadline, f"{name} never reached {value}"
        time.sleep(0.02)


def test_full_queue_429_with_retry_after(server: ServerProcess) -> None:
    client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0, timeout=120)
    queued: list[object] = []
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=LONG, timeout=120) as r:
        lines = r.iter_lines()  # keep a reference: a dropped iterator closes the stream
        next(lines)
        wait_for(server, "jongleur_num_requests_running", 1)  # the one slot is taken
        waiter = threading.Thread(target=lambda: queued.append(client.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)))
        waiter.start()
        wait_for(server, "jongleur_num_requests_waiting", 1)  # the queue of one is full
        with pytest.raises(openai.RateLimitError) as e:
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        assert int(e.value.response.headers["retry-after"]) >= 1
    waiter.join(120)
    assert len(queued) == 1  # the queued request was served once the slot freed
    server.wait_idle()
    assert client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}],
                                          max_tokens=2).choices


def test_sigterm_drains(server: ServerProcess) -> None:
    body = {**LONG, "max_tokens": 150}
    with httpx.stream("POST", server.base_url + "/v1/chat/completions", json=body, timeout=120) as r:
        lines = r.iter_lines()
        next(lines)
        server.terminate()
        deadline = time.monotonic() + 10
        while httpx.get(server.base_url + "/ready").status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        refused = httpx.post(server.base_url + "/v1/chat/completions", json={"messages": [
            {"role": "user", "content": "hi"}]})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
        rest = list(lines)
    assert "data: [DONE]" in rest and not any('"error"' in line for line in rest)
    assert server.proc is not None and server.proc.wait(30) == 0
