"""The model store: import, content addressing, digests, aliases, and names that may not be paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_model import make_tiny_model_dir

from jongleur.catalog.names import InvalidName, parse_ref
from jongleur.catalog.store import AliasTarget, DigestMismatch, ModelStore, StoreError

BAD_NAMES = ["../etc", "/abs", "a/b", "a\x00b", "..", ".hidden", "UPPER/..", "a" * 100, "", "na me", "x\\y"]


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("src") / "tiny", "llama", seed=1)


def test_import_hf_folder_is_content_addressed(tmp_path: Path, tiny_src: Path) -> None:
    store = ModelStore(tmp_path / "models")
    m = store.import_path(tiny_src, name="tiny")
    assert (m.name, m.tag, m.format, m.architecture) == ("tiny", "1", "safetensors", "llama")
    assert m.parameters > 0 and m.context_window == 512
    for f in m.files:
        assert (store.root / "blobs" / f"sha256-{f.sha256}").is_file()
    path = store.model_path(m)
    assert (path / "config.json").is_file() and path.is_relative_to(store.root)
    m2 = store.import_path(tiny_src, name="tiny")  # same content: a new version, no new blobs
    assert m2.tag == "2" and len(list((store.root / "blobs").iterdir())) == len(m.files)
    assert store.find("tiny").tag == "2" and store.find("tiny@1") == m
    store.verify(m)


def test_tampered_blob_fails_verification(tmp_path: Path, tiny_src: Path) -> None:
    store = ModelStore(tmp_path / "models")
    m = store.import_path(tiny_src, name="tiny")
    weights = next(f for f in m.files if f.name.endswith(".safetensors"))
    blob = store.root / "blobs" / f"sha256-{weights.sha256}"
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(DigestMismatch):
        store.verify(m)


def test_import_rejects_truncated_gguf_and_non_models(tmp_path: Path) -> None:
    import gguf
    import numpy as np

    path = tmp_path / "t.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_tensor("token_embd.weight", np.zeros((64, 16), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    store = ModelStore(tmp_path / "models")
    with pytest.raises(StoreError, match="GGUF"):
        store.import_path(path, name="broken")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(StoreError):
        store.import_path(tmp_path / "notes.txt", name="notes")
    assert store.list() == []


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_bad_names_are_rejected_and_touch_nothing(tmp_path: Path, tiny_src: Path, bad: str) -> None:
    store = ModelStore(tmp_path / "models")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises((InvalidName, StoreError)):
        store.import_path(tiny_src, name=bad)
    with pytest.raises((InvalidName, StoreError)):
        store.import_path(tiny_src, name="ok", tag=bad or "..")
    with pytest.raises((InvalidName, StoreError)):
        store.find(bad)
    with pytest.raises((InvalidName, StoreError)):
        store.set_alias(bad, [AliasTarget("ok@1")])
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert store.list() == []


def test_parse_ref() -> None:
    assert str(parse_ref("Chat")) == "chat"
    assert str(parse_ref("qwen@2")) == "qwen@2" and str(parse_ref("qwen:2")) == "qwen@2"
    assert str(parse_ref("qwen:latest")) == "qwen"
    with pytest.raises(InvalidName):
        parse_ref("qwen@../../x")


def test_aliases_and_weights(tmp_path: Path, tiny_src: Path) -> None:
    store = ModelStore(tmp_path / "models")
    store.import_path(tiny_src, name="tiny")
    store.import_path(tiny_src, name="tiny")
    store.set_alias("chat", [AliasTarget("tiny@1")])
    a = store.set_alias("chat", [AliasTarget("tiny@1", 90), AliasTarget("tiny@2", 10)])
    assert [t.ref for t in a.previous] == ["tiny@1"]
    assert json.loads((store.root / "aliases.json").read_text())["chat"]["targets"][1]["weight"] == 10
    with pytest.raises(StoreError):
        store.set_alias("tiny", [AliasTarget("tiny@1")])  # a model name is not an alias
    with pytest.raises(StoreError):
        store.set_alias("x", [AliasTarget("tiny@9")])
    with pytest.raises(StoreError):
        store.remove("tiny", "1")  # the alias points at it
    store.remove_alias("chat")
    store.remove("tiny", "1")
    assert [m.ref for m in store.list()] == ["tiny@2"]


def test_default_sampling_from_generation_config(tmp_path: Path, tiny_src: Path) -> None:
    import shutil

    folder = tmp_path / "sampled"
    shutil.copytree(tiny_src, folder)
    generation = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05,
                  "eos_token_id": 2}
    (folder / "generation_config.json").write_text(json.dumps(generation))
    store = ModelStore(tmp_path / "models")
    m = store.import_path(folder, name="sampled")
    assert m.sampling == {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05}
    assert store.find("sampled@1").sampling == m.sampling  # kept in the manifest
    (folder / "generation_config.json").write_text(json.dumps({**generation, "do_sample": False}))
    assert store.import_path(folder, name="sampled").sampling == {}  # greedy: no sampling defaults
    assert store.import_path(folder, name="sampled", sampling={"temperature": 0.0}).sampling == {"temperature": 0.0}
    for bad in ({"temprature": 0.5}, {"temperature": "hot"}, {"top_p": float("nan")}, {"top_k": True}):
        with pytest.raises(ValueError, match="sampling"):
            store.import_path(folder, name="sampled", sampling=bad)
