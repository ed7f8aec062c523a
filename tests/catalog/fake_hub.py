"""A local HTTP server that imitates the hub's file endpoints (HEAD with digests, GET with Range)."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gguf
import numpy as np


def tiny_gguf(path: Path) -> bytes:
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(64)
    w.add_tensor("token_embd.weight", np.arange(256 * 64, dtype=np.float32).reshape(256, 64))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.read_bytes()


class Hub:
    """files: {"org/repo/file": bytes}; `cut_next` sends half of the next GET then drops the connection."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.announce: dict[str, str] = {}  # sha256 to announce (default: the real one)
        self.cut_next = False
        self.ranges: list[str] = []


@contextlib.contextmanager
def fake_hub() -> Iterator[tuple[Hub, str]]:
    """The hub's state (files to serve, digests to announce, cuts) and its base URL."""
    state = Hub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _file(self) -> tuple[str, bytes] | None:
            """The requested file, or None after answering 404."""
            parts = self.path.lstrip("/").split("/")
            key = f"{parts[0]}/{parts[1]}/{parts[4]}" if len(parts) == 5 and parts[2] == "resolve" else ""
            if key not in state.files:
                self.send_response(404)
                self.end_headers()
                return None
            return key, state.files[key]

        def do_HEAD(self) -> None:
            found = self._file()
            if found is None:
                return
            key, data = found
            self.send_response(302)  # the hub redirects LFS files to its CDN
            self.send_header("X-Linked-Etag", f'"{state.announce.get(key, hashlib.sha256(data).hexdigest())}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("Location", self.path)
            self.end_headers()

        def do_GET(self) -> None:
            found = self._file()
            if found is None:
                return
            _, data = found
            start = 0
            if rng := self.headers.get("Range"):
                state.ranges.append(rng)
                start = int(rng.removeprefix("bytes=").split("-")[0])
            body = data[start:]
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_next:
                state.cut_next = False
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
