"""Start a real server process on 127.0.0.1 and a free port (after llama.cpp's ServerProcess)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, args: list[str], env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.args = [a.replace("{port}", str(self.port)) for a in args]
        self.env = {**os.environ, **(env or {})}
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def jongleur(cls, *flags: str, env: dict[str, str] | None = None, log_path: Path | None = None) -> ServerProcess:
        return cls([sys.executable, "-m", "jongleur.cli", "serve", "--port", "{port}", *flags], env, log_path)

    def start(self, wait_ready: bool = True, timeout: float = 120.0) -> ServerProcess:
        out = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT)
        deadline = time.monotonic() + timeout
        path = "/ready" if wait_ready else "/health"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if httpx.get(self.base_url + path, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server not {path} after {timeout}s: {self.log_tail()}")

    def log_tail(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-3000:]
        return ""

    def metric(self, name: str) -> float:
        """The value of a Prometheus gauge/counter of the (single) model, from `/metrics`."""
        for line in httpx.get(self.base_url + "/metrics", timeout=30).text.splitlines():
            if line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no metric {name}")

    def wait_idle(self, within: float = 1.5) -> None:
        """The engine dropped all work: nothing running, KV blocks back to zero, within `within` s."""
        def busy() -> bool:
            return bool(self.metric("jongleur_num_requests_running") or self.metric("jongleur_kv_cache_usage_ratio"))
        deadline = time.monotonic() + within
        while busy() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not busy(), "work still running or KV blocks held"

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode
