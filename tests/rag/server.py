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
