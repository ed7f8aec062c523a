"""Pull against a local HTTP server that imitates the hub's file endpoints (no network)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tiny_model import make_tiny_model_dir

from catalog.fake_hub import Hub, fake_hub, tiny_gguf
from jongleur.catalog.names import InvalidName
from jongleur.catalog.pull import HubClient, PullError, pull
from jongleur.catalog.store import DigestMismatch, ModelStore


@pytest.fixture
def hub() -> Iterator[tuple[Hub, str]]:
    with fake_hub() as running:
        yield running


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
