"""A real `jongleur serve` (tiny random-weight model) with keys: limits under parallel load,
quotas, priority end to end, usage records, and no key material in logs or metrics."""

from __future__ import annotations

import concurrent.futures as cf
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from api.server_process import ROOT, ServerProcess

from jongleur.auth.cli import CLI_ACTOR
from jongleur.auth.schemas import KeyCreate, TenantCreate
from jongleur.auth.setup import open_directory
from jongleur.config import Settings


@dataclass
class Served:
    server: ServerProcess
    keys: dict[str, str]
    log: Path

    def h(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[name]}"}


@pytest.fixture(scope="module")
def served(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("auth-e2e")
    data = tmp / "data"
    out = subprocess.run([sys.executable, "-m", "jongleur.cli", "keys", "create", "--name", "root", "--role", "admin",
                          "--clearance", "secret", "--priority", "high", "--data-dir", str(data), "--json"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, check=True)
    keys = {"root": json.loads(out.stdout)["key"]}
    directory = open_directory(Settings.load(data_dir=data))
    for name, policy in {"rpm": {"rpm": 5}, "tpm": {"tpm": 200}, "quota": {"daily_tokens": 300},
                         "low": {"priority": "low"}, "high": {"priority": "high"}}.items():
        keys[name] = directory.create_key(CLI_ACTOR, KeyCreate(name=name, policy=policy)).key  # type: ignore[arg-type]
    for tenant in ("flood", "steady"):  # two tenants of equal weight, for fair share
        tid = directory.create_tenant(CLI_ACTOR, TenantCreate(name=tenant)).id
        keys[tenant] = directory.create_key(CLI_ACTOR, KeyCreate(name=tenant, tenant_id=tid)).key
    directory.db.close()
    log = tmp / "server.log"
    server = ServerProcess.jongleur("--model", str(tiny_model_dir), "--served-model-name", "tiny",
                                    "--embedding-model", "", "--data-dir", str(data), "--kv-cache-memory-mb", "32",
                                    "--max-num-seqs", "2", "--log-level", "debug", log_path=log).start(timeout=300)
    yield Served(server, keys, log)
    assert server.stop() == 0
    text = log.read_text(errors="replace")
    for secret in keys.values():  # no key material in the server's logs
        assert secret not in text and secret[3:20] not in text


def chat(s: Served, key: str, max_tokens: int = 1, **extra: object) -> httpx.Response:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": max_tokens,
            **extra}
    return httpx.post(s.server.base_url + "/v1/chat/completions", json=body, headers=s.h(key), timeout=120)


def test_keys_required_once_they_exist(served: Served) -> None:
    base = served.server.base_url
    assert httpx.get(base + "/v1/models").status_code == 401
    assert httpx.get(base + "/health").status_code == 200 and httpx.get(base + "/api/version").status_code == 200
    assert httpx.get(base + "/v1/models", headers=served.h("root")).status_code == 200
    metrics = httpx.get(base + "/metrics").text
    assert all(k not in metrics and k[3:20] not in metrics for k in served.keys.values())


def test_rpm_holds_under_parallel_load(served: Served) -> None:
    with cf.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda _: chat(served, "rpm"), range(16)))
    ok = [r for r in results if r.status_code == 200]
    limited = [r for r in results if r.status_code == 429]
    assert len(ok) == 5 and len(limited) == 11, [r.status_code for r in results]  # no overshoot in one process
    assert all(int(r.headers["retry-after"]) >= 1 and r.json()["error"]["code"] == "rate_limit_exceeded"
               for r in limited)
    # Usage records are written once each response has been sent: poll briefly for the last ones.
    deadline = time.monotonic() + 15
    while True:
        usage = httpx.get(served.server.base_url + "/v1/usage", headers=served.h("rpm")).json()
        served_ok = [r["status"] for r in usage["records"]].count(200)
        if served_ok >= 5 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert served_ok == 5


def test_tpm_reserves_prompt_plus_max_tokens(served: Served) -> None:
    with cf.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: chat(served, "tpm", max_tokens=60), range(8)))
    ok = [r for r in results if r.status_code == 200]
    assert 1 <= len(ok) <= 3, [r.status_code for r in results]  # 200 tokens / (prompt + 60) each
    assert all(r.status_code == 429 and "retry-after" in r.headers for r in results if r.status_code != 200)


def test_daily_quota_then_insufficient_quota(served: Served) -> None:
    used = 0
    for _ in range(40):
        r = chat(served, "quota", max_tokens=20)
        if r.status_code != 200:
            break
        used += r.json()["usage"]["total_tokens"]
    assert r.status_code == 429 and r.json()["error"]["code"] == "insufficient_quota"
    assert r.json()["error"]["type"] == "insufficient_quota" and int(r.headers["retry-after"]) > 0
    assert 0 < used <= 300


def _ttft(s: Served, key: str) -> float:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "stream": True}
    t = time.monotonic()
    with httpx.stream("POST", s.server.base_url + "/v1/chat/completions", json=body, headers=s.h(key),
                      timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and '"content": ""' not in line:
                return time.monotonic() - t
    raise AssertionError("no token")


@contextmanager
def flooding(served: Served, key: str, threads: int, max_tokens: int, settle_s: float) -> Iterator[None]:
    """`threads` clients send long requests with `key` back to back until the block ends."""
    stop = threading.Event()

    def flood() -> None:
        while not stop.is_set():
            chat(served, key, max_tokens=max_tokens, ignore_eos=True)

    floods = [threading.Thread(target=flood) for _ in range(threads)]
    for t in floods:
        t.start()
    try:
        time.sleep(settle_s)
        yield
    finally:
        stop.set()
        for t in floods:
            t.join()


def test_high_priority_first_tokens_under_low_priority_flood(served: Served) -> None:
    # Long flood requests, more of them than batch slots: a low-priority request must queue behind
    # them, whatever the machine's speed, while a high-priority one preempts.
    with flooding(served, "low", threads=6, max_tokens=200, settle_s=0.5):
        high, low = [], []
        for _ in range(2):  # interleaved, medians
            high.append(_ttft(served, "high"))
            low.append(_ttft(served, "low"))
    h, lo = statistics.median(high), statistics.median(low)
    print(f"TTFT under a low-priority flood: high {h * 1000:.0f} ms, low (control) {lo * 1000:.0f} ms, "
          f"ratio {lo / h:.1f}")
    assert lo > 3 * h


def test_flooding_tenant_does_not_starve_a_steady_one(served: Served) -> None:
    """Same priority, different tenants: the scheduler's per-tenant fair share must put a steady
    tenant's request ahead of the flooding tenant's queue."""
    # Twelve at once against 2 batch slots: the flooding tenant always has a deep queue, and its own
    # new request waits behind it, while the steady tenant's goes first and waits only for a slot.
    with flooding(served, "flood", threads=12, max_tokens=100, settle_s=1.0):
        steady, control = [], []
        with cf.ThreadPoolExecutor(2) as pool:
            for _ in range(2):  # sent at the same moment; medians
                flooding_request = pool.submit(_ttft, served, "flood")
                calm = pool.submit(_ttft, served, "steady")
                control.append(flooding_request.result())
                steady.append(calm.result())
    s, c = statistics.median(steady), statistics.median(control)
    print(f"TTFT under another tenant's flood: steady tenant {s * 1000:.0f} ms, flooding tenant {c * 1000:.0f} ms")
    assert c > 3 * s
