"""Pull against a local HTTP server that imitates the hub's file endpoints (no network)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import gguf
import numpy as np
import pytest
from tiny_model import make_tiny_model_dir

from jongleur.catalog.names import InvalidName
from jongleur.catalog.pull import HubClient, PullError, pull
from jongleur.catalog.store import DigestMismatch, ModelStore


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


@pytest.fixture
def hub() -> Iterator[tuple[Hub, str]]:
    state = Hub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _file(self) -> tuple[str, bytes] | None:
            parts = self.path.lstrip("/").split("/")
            if len(parts) != 5 or parts[2] != "resolve":
                return None
            key = f"{parts[0]}/{parts[1]}/{parts[4]}"
            return (key, state.files[key]) if key in state.files else None

        def do_HEAD(self) -> None:
            found = self._file()
            if found is None:
                self.send_response(404)
                self.end_headers()
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
                self.send_response(404)
                self.end_headers()
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


def test_interrupted_transfer_resumes(tmp_path: Path, hub: tuple[Hub, str]) -> None:
    state, url = hub
    data = tiny_gguf(tmp_path / "m.gguf")
    state.files["org/tiny-GGUF/m.gguf"] = data
    store = ModelStore(tmp_path / "models")
    client = HubClient(url, progress=False)
    state.cut_next = True
    with pytest.raises(PullError, match="resume"):
        pull(store, "org/tiny-GGUF:m.gguf", hub=client)
    assert store.list() == []
    m = pull(store, "org/tiny-GGUF:m.gguf", hub=client, name="tiny")
    assert state.ranges and int(state.ranges[-1].removeprefix("bytes=").rstrip("-")) > 0
    assert m.ref == "tiny@1" and m.format == "gguf" and m.files[0].sha256 == hashlib.sha256(data).hexdigest()
    assert store.model_path(m).read_bytes() == data
    assert not any((store.root / "partial").iterdir())


def test_tampered_file_fails_its_digest(tmp_path: Path, hub: tuple[Hub, str]) -> None:
    state, url = hub
    data = tiny_gguf(tmp_path / "m.gguf")
    state.files["org/tiny-GGUF/m.gguf"] = data[:-1] + bytes([data[-1] ^ 1])
    state.announce["org/tiny-GGUF/m.gguf"] = hashlib.sha256(data).hexdigest()
    store = ModelStore(tmp_path / "models")
    with pytest.raises(DigestMismatch):
        pull(store, "org/tiny-GGUF:m.gguf", hub=HubClient(url, progress=False))
    assert store.list() == [] and not any((store.root / "blobs").iterdir())
    state.announce.clear()  # an explicit --sha256 that does not match is refused too
    with pytest.raises(DigestMismatch):
        pull(store, "org/tiny-GGUF:m.gguf", sha256="0" * 64, hub=HubClient(url, progress=False))
    assert store.list() == []


def test_hf_folder_pull(tmp_path: Path, hub: tuple[Hub, str]) -> None:
    state, url = hub
    src = make_tiny_model_dir(tmp_path / "src", "llama", seed=5)
    for p in src.iterdir():
        state.files[f"org/tiny/{p.name}"] = p.read_bytes()
    store = ModelStore(tmp_path / "models")
    client = HubClient(url, progress=False)
    client.list_files = lambda repo, rev: sorted(p.name for p in src.iterdir())  # type: ignore[method-assign]
    m = pull(store, "org/tiny", hub=client)
    assert m.ref == "tiny@1" and m.format == "safetensors" and len(m.files) == len(list(src.iterdir()))
    store.verify(m)


def test_offline_and_bad_specs(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with pytest.raises(PullError, match="offline"):
        pull(store, "org/x:m.gguf", hub=HubClient("http://127.0.0.1:9", progress=False))
    for bad in ("../x:m.gguf", "org/x:../../etc/passwd", "/abs/x", "org/x/y", "org/x:a\x00b"):
        with pytest.raises(InvalidName):
            pull(store, bad, hub=HubClient("http://127.0.0.1:9", progress=False))
    with pytest.raises(InvalidName):
        pull(store, "org/x:m.gguf", revision="../main", hub=HubClient("http://127.0.0.1:9", progress=False))
