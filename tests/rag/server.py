"""A real `jongleur serve` for the RAG and MCP tests: the tiny random-weight chat model (plumbing
only), the bundled all-MiniLM-L6-v2 embedder, and two API keys standing for two teams."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from api.server_process import ServerProcess

TEAM_A = "sk-team-a-0123456789"  # principal key-0
TEAM_B = "sk-team-b-9876543210"  # principal key-1


def start_server(tmp: Path, model_dir: Path | str | None, *flags: str, env: dict[str, str] | None = None,
                 timeout: float = 300) -> ServerProcess:
    args = ["--embedding-model", "all-minilm-l6-v2", "--data-dir", str(tmp / "data"), "--kv-cache-memory-mb", "64",
            "--max-num-seqs", "4"]
    if model_dir is not None:
        args += ["--model", str(model_dir)]
        if not str(model_dir).startswith("qwen"):
            args += ["--served-model-name", "tiny"]
    env = {"JONGLEUR_API_KEYS": json.dumps([TEAM_A, TEAM_B]), **(env or {})}
    return ServerProcess.jongleur(*args, *flags, env=env, log_path=tmp / "server.log").start(timeout=timeout)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def upload(client: httpx.Client, collection: str, paths: list[Path], key: str, **fields: str) -> httpx.Response:
    files = [("file", (p.name, p.read_bytes(), "application/octet-stream")) for p in paths]
    return client.post(f"/v1/collections/{collection}/documents", files=files, data=fields, headers=auth(key))


def team_keys(client: httpx.Client) -> tuple[str, str, str]:
    """(team A key, team B key, an ACL entry naming team B). With the tenancy admin API, two member
    keys of one tenant are minted (config keys are admins, who see all their tenant's collections);
    on the older seam the two configured keys are two plain members."""
    r = client.post("/admin/keys", json={"name": "team-a", "role": "member", "clearance": "confidential"},
                    headers=auth(TEAM_A))
    if r.status_code in (404, 405):
        a, b = TEAM_A, TEAM_B
    else:
        assert r.status_code in (200, 201), r.text
        a = r.json()["key"]
        r = client.post("/admin/keys", json={"name": "team-b", "role": "member", "clearance": "confidential"},
                        headers=auth(TEAM_A))
        assert r.status_code in (200, 201), r.text
        b = r.json()["key"]
    probe = client.post("/v1/collections", json={"name": "probe-b"}, headers=auth(b))
    assert probe.status_code == 201, probe.text
    entry = f"user:{probe.json()['owner']}"
    client.delete("/v1/collections/probe-b", headers=auth(b))
    return a, b, entry
