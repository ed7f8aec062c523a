"""A real server on the model store: versions, aliases, zero-downtime update under load, rejection
of broken versions, and names that try to leave the store. One server for the whole module."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from api.server_process import ROOT, ServerProcess
from tiny_model import make_tiny_model_dir

from jongleur.catalog.store import AliasTarget, ModelStore


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("catalog-e2e")
    store = ModelStore(tmp / "data" / "models")
    store.import_path(make_tiny_model_dir(tmp / "v1", "qwen2", seed=1), name="tiny", tag="1")
    store.import_path(make_tiny_model_dir(tmp / "v2", "qwen2", seed=2), name="tiny", tag="2")
    broken = make_tiny_model_dir(tmp / "v3", "qwen2", seed=3)
    config = json.loads((broken / "config.json").read_text())
    config["model_type"] = "no-such-architecture"
    config["architectures"] = ["NoSuchForCausalLM"]
    (broken / "config.json").write_text(json.dumps(config))
    store.import_path(broken, name="tiny", tag="3")
    m4 = store.import_path(make_tiny_model_dir(tmp / "v4", "qwen2", seed=4), name="tiny", tag="4")
    weights = next(f for f in m4.files if f.name.endswith(".safetensors"))
    blob = store.blob_path(weights.sha256)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x55  # tampered after import: its digest no longer matches
    blob.write_bytes(bytes(data))
    store.set_alias("chat", [AliasTarget("tiny@1")])
    flags = ["--model", "", "--embedding-model", "", "--data-dir", str(tmp / "data"),
             "--kv-cache-memory-mb", "16", "--max-num-seqs", "32", "--memory-budget-mb", "256"]
    proc = ServerProcess.jongleur(*flags, log_path=tmp / "server.log").start(timeout=300)
    proc.tmp = tmp  # type: ignore[attr-defined]
    yield proc
    proc.stop()


def chat(client: httpx.Client, model: str, max_tokens: int = 4) -> dict:
    resp = client.post("/v1/chat/completions", json={
        "model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens,
        "temperature": 0, "ignore_eos": True})
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_lists_and_loads_on_first_use(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.base_url, timeout=120) as c:
        ids = {m["id"]: m for m in c.get("/v1/models").json()["data"]}
        assert {"tiny@1", "tiny@2"} <= set(ids) and ids["tiny@1"]["aliases"] == ["chat"]
        assert chat(c, "chat")["model"] == "tiny@1"  # loads on first use
        assert chat(c, "tiny@2")["model"] == "tiny@2"
        assert chat(c, "tiny:2")["model"] == "tiny@2"  # Ollama's name:tag
        loaded = {m["name"] for m in c.get("/api/ps").json()["models"]}
        assert loaded == {"tiny:1", "tiny:2"}
        assert {m["name"] for m in c.get("/api/tags").json()["models"]} >= {"tiny:1", "tiny:2", "tiny:3"}
        assert c.post("/admin/models/tiny@2/unload").status_code == 200


@dataclass
class Result:
    started: float
    ended: float
    model: str | None
    error: str | None = None
    stream: bool = False


def _worker(base_url: str, stop: threading.Event, out: list[Result], stream: bool) -> None:
    with httpx.Client(base_url=base_url, timeout=120) as c:
        while not stop.is_set():
            t0 = time.monotonic()
            body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "temperature": 0,
                    "ignore_eos": True, "max_tokens": 48 if stream else 6, "stream": stream}
            try:
                if not stream:
                    r = c.post("/v1/chat/completions", json=body)
                    ok = r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
                    out.append(Result(t0, time.monotonic(), r.json().get("model") if ok else None,
                                      None if ok else f"{r.status_code} {r.text[:200]}"))
                    continue
                models, finish, done, tokens = set(), None, False, 0
                with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    if r.status_code != 200:
                        r.read()
                        raise RuntimeError(f"{r.status_code} {r.text[:200]}")
                    for line in r.iter_lines():
                        if line == "data: [DONE]":
                            done = True
                        elif line.startswith("data: "):
                            chunk = json.loads(line[6:])
                            models.add(chunk["model"])
                            for ch in chunk["choices"]:
                                finish = ch.get("finish_reason") or finish
                                tokens += 1 if ch["delta"].get("content") else 0
                ok = done and finish == "length" and len(models) == 1
                out.append(Result(t0, time.monotonic(), models.pop() if len(models) == 1 else None,
                                  None if ok else f"truncated: done={done} finish={finish} models={models}", True))
            except Exception as exc:  # noqa: BLE001 - every failure is counted, none may happen
                out.append(Result(t0, time.monotonic(), None, repr(exc), stream))


def _metric(c: httpx.Client, name: str) -> float | None:
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_update_under_load_zero_failures(server: ServerProcess) -> None:
    results: list[Result] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_worker, args=(server.base_url, stop, results, i % 3 == 0))
               for i in range(6)]
    with httpx.Client(base_url=server.base_url, timeout=600) as c:
        assert chat(c, "chat")["model"] == "tiny@1"
        for t in threads:
            t.start()
        time.sleep(2)
        t_up = time.monotonic()
        up = c.post("/admin/models/update", json={"alias": "chat", "version": "tiny@2"})
        t_up_done = time.monotonic()
        assert up.status_code == 200, up.text
        assert up.json()["drain"] == {"tiny@1": "unloaded"}
        assert {m["name"] for m in c.get("/api/ps").json()["models"]} == {"tiny:2"}
        time.sleep(2)
        t_back = time.monotonic()  # back with the CLI, through the same admin API
        cli = subprocess.run([sys.executable, "-m", "jongleur.cli", "models", "rollback", "chat",
                              "--url", server.base_url], check=False, capture_output=True, text=True, cwd=ROOT, timeout=600)
        t_back_done = time.monotonic()
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["to"] == ["tiny@1"]
        # the CLI prints the server's progress events while it waits (GET /admin/catalog/events)
        assert re.search(r"ready\s+tiny@1 100%", cli.stderr) and re.search(r"switched\s+chat", cli.stderr), cli.stderr
        time.sleep(1)
        stop.set()
        for t in threads:
            t.join(120)
        assert {m["name"] for m in c.get("/api/ps").json()["models"]} == {"tiny:1"}
        deadline = time.monotonic() + 10  # every request ended: no KV block of the serving version in use
        while _metric(c, 'jongleur_kv_cache_usage_ratio{model="tiny@1"}') != 0.0 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _metric(c, 'jongleur_kv_cache_usage_ratio{model="tiny@1"}') == 0.0
        assert _metric(c, 'jongleur_num_requests_running{model="tiny@1"}') == 0.0
    failures = [r for r in results if r.error]
    streams = [r for r in results if r.stream]
    print(f"\nupdate: {t_up_done - t_up:.2f} s (report {up.json()}), rollback {t_back_done - t_back:.2f} s; "
          f"{len(results)} requests ({len(streams)} streams), "
          f"{sum(1 for r in results if t_up <= r.started <= t_up_done)} started during the update, "
          f"{len(failures)} failed; rollback report {cli.stdout}")
    assert not failures, failures[:5]
    assert len(results) > 30 and len(streams) > 5
    assert all(r.model == "tiny@1" for r in results if r.ended < t_up)
    assert all(r.model == "tiny@2" for r in results if t_up_done < r.started and r.ended < t_back)
    assert all(r.model == "tiny@1" for r in results if r.started > t_back_done)
    assert any(r.model == "tiny@2" for r in results)


@pytest.mark.parametrize(("version", "why"), [("tiny@3", "architecture"), ("tiny@4", "SHA-256"),
                                              ("tiny@99", "no model")])
def test_broken_version_rejected_old_keeps_serving(server: ServerProcess, version: str, why: str) -> None:
    with httpx.Client(base_url=server.base_url, timeout=300) as c:
        r = c.post("/admin/models/update", json={"alias": "chat", "version": version})
        assert r.status_code == 422 and r.json()["error"]["code"] == "update_failed", r.text
        assert why.lower() in r.json()["error"]["message"].lower()
        assert chat(c, "chat")["model"] == "tiny@1"
        assert {m["name"] for m in c.get("/api/ps").json()["models"]} == {"tiny:1"}


def test_truncated_gguf_import_rejected(server: ServerProcess) -> None:
    import gguf
    import numpy as np

    path = server.tmp / "trunc.gguf"  # type: ignore[attr-defined]
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("token_embd.weight", np.ones((128, 16), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    path.write_bytes(path.read_bytes()[:-100])
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        r = c.post("/admin/models/import", json={"path": str(path), "name": "trunc"})
        assert r.status_code == 400 and "GGUF" in r.json()["error"]["message"], r.text
        assert all(m["name"] != "trunc" for m in c.get("/admin/models").json()["models"])


BAD = ["../../etc/passwd", "/etc/passwd", "tiny@../../x", "a\x00b", "..", "tiny@1/../../x", "%2e%2e%2fx", "x" * 300]


def test_bad_names_everywhere(server: ServerProcess) -> None:
    tmp: Path = server.tmp  # type: ignore[attr-defined]
    before = sorted(str(p) for p in tmp.rglob("*"))
    with httpx.Client(base_url=server.base_url, timeout=60) as c:
        for bad in BAD:
            for route in ("/v1/chat/completions", "/v1/completions", "/api/chat", "/api/generate"):
                body = {"model": bad, "messages": [{"role": "user", "content": "x"}], "prompt": "x",
                        "stream": False}
                assert c.post(route, json=body).status_code in (400, 404), (route, bad)
            quoted = httpx.URL("/admin/models/").copy_with(raw_path=b"/admin/models/" + bad.encode().replace(
                b"/", b"%2F").replace(b"\x00", b"%00"))
            assert c.get(quoted).status_code in (400, 404)
            assert c.delete(quoted).status_code in (400, 404)
            assert c.post("/admin/models/import", json={"path": str(tmp / "v1"), "name": bad}).status_code == 400
            assert c.post("/admin/models/update", json={"alias": bad, "version": "tiny@1"}).status_code in (400, 422)
            assert c.post("/admin/models/update", json={"alias": "chat", "version": bad}).status_code in (400, 422)
            assert c.get(f"/v1/models/{bad.replace(chr(0), '%00')}").status_code in (400, 404)
        assert chat(c, "chat")["model"] == "tiny@1"
    after = sorted(str(p) for p in tmp.rglob("*"))
    outside = [p for p in set(after) - set(before) if "/data/" not in p and not p.endswith("server.log")]
    assert not outside


def test_cli_import_tag_show_rm(server: ServerProcess, tmp_path: Path) -> None:
    data = server.tmp / "data"  # type: ignore[attr-defined]
    src = shutil.copytree(server.tmp / "v2", tmp_path / "copy")  # type: ignore[attr-defined]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "jongleur.cli", "models", *args, "--data-dir", str(data)],
                              check=False, capture_output=True, text=True, cwd=ROOT, timeout=300)

    r = cli("import", str(src), "--name", "other", "--tag", "a")
    assert r.returncode == 0 and "imported other@a" in r.stdout, r.stderr
    assert cli("import", str(src), "--name", "../x").returncode == 1
    assert json.loads(cli("show", "other@a").stdout)["architecture"] == "qwen2"
    assert cli("rm", "other@a").returncode == 0
    assert cli("show", "other@a").returncode == 1
