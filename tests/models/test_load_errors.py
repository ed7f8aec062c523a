"""Truncated, corrupt and lying model files fail with `ModelLoadError`: fast, and no huge allocation."""

from __future__ import annotations

import json
import struct
import time

import pytest
import torch
from gguf_writer import Q, write_gguf
from tiny_models import save_tiny, tiny_hf_model

from jongleur.models.gguf_file import read_gguf
from jongleur.models.loader import ModelLoadError, load_model


@pytest.fixture(scope="module")
def good_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("good") / "tiny.gguf"
    write_gguf(tiny_hf_model("llama"), "llama", path, {"token_embd": Q.Q8_0, "ffn": Q.F16})
    return path


def _load_fails(path, match: str | None = None) -> ModelLoadError:
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match=match) as err:
        load_model(path, dtype=torch.float32, use_cache=False, progress=False)
    assert time.perf_counter() - start < 10
    return err.value


def _tensor_entry_offset(data: bytes, name: str) -> int:
    """Offset just after a tensor's name in the tensor directory (its n_dims field)."""
    encoded = name.encode()
    at = data.index(struct.pack("<Q", len(encoded)) + encoded)
    return at + 8 + len(encoded)


@pytest.mark.parametrize("fraction", [0.0005, 0.01, 0.3, 0.7, 0.999])
def test_truncated_gguf(good_gguf, tmp_path, fraction):
    data = good_gguf.read_bytes()
    bad = tmp_path / "truncated.gguf"
    bad.write_bytes(data[: int(len(data) * fraction)])
    _load_fails(bad)


def test_wrong_magic_and_empty(good_gguf, tmp_path):
    bad = tmp_path / "magic.gguf"
    bad.write_bytes(b"GGML" + good_gguf.read_bytes()[4:])
    _load_fails(bad, "not a GGUF")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    _load_fails(empty)


def test_unsupported_version(good_gguf, tmp_path):
    data = bytearray(good_gguf.read_bytes())
    data[4:8] = struct.pack("<I", 99)
    bad = tmp_path / "version.gguf"
    bad.write_bytes(bytes(data))
    _load_fails(bad, "version")


@pytest.mark.parametrize("field_offset", [8, 16])  # tensor count, kv count
def test_absurd_counts(good_gguf, tmp_path, field_offset):
    data = bytearray(good_gguf.read_bytes())
    data[field_offset : field_offset + 8] = struct.pack("<Q", 1 << 60)
    bad = tmp_path / "counts.gguf"
    bad.write_bytes(bytes(data))
    _load_fails(bad, "too many")


@pytest.mark.parametrize("item_type", [4, 8])  # uint32 array, string array
def test_array_claiming_2_pow_60_items(tmp_path, item_type):
    key = b"general.evil"
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", len(key)) + key
    bad = tmp_path / "array.gguf"
    bad.write_bytes(header + struct.pack("<IIQ", 9, item_type, 1 << 60) + b"\0" * 64)
    _load_fails(bad)


def test_tensor_offset_beyond_file(good_gguf, tmp_path):
    data = bytearray(good_gguf.read_bytes())
    at = _tensor_entry_offset(bytes(data), "blk.1.ffn_down.weight")
    n_dims = struct.unpack_from("<I", data, at)[0]
    offset_at = at + 4 + 8 * n_dims + 4
    data[offset_at : offset_at + 8] = struct.pack("<Q", len(data) * 4)
    bad = tmp_path / "offset.gguf"
    bad.write_bytes(bytes(data))
    _load_fails(bad, "beyond the end of the file")


def test_absurd_tensor_shape(good_gguf, tmp_path):
    data = bytearray(good_gguf.read_bytes())
    at = _tensor_entry_offset(bytes(data), "token_embd.weight")
    data[at + 4 : at + 12] = struct.pack("<Q", 1 << 50)  # first dimension
    bad = tmp_path / "shape.gguf"
    bad.write_bytes(bytes(data))
    _load_fails(bad)


def test_lying_config_is_rejected_before_allocation(good_gguf, tmp_path):
    """A header claiming a huge model but holding tiny tensors fails on shapes, not in malloc."""
    data = bytearray(good_gguf.read_bytes())
    key = b"llama.feed_forward_length"
    at = data.index(struct.pack("<Q", len(key)) + key) + 8 + len(key)
    assert struct.unpack_from("<I", data, at)[0] == 4  # uint32
    data[at + 4 : at + 8] = struct.pack("<I", 1 << 20)
    bad = tmp_path / "lying.gguf"
    bad.write_bytes(bytes(data))
    _load_fails(bad, "shape")


def test_unknown_architecture_names_supported_ones(good_gguf, tmp_path):
    data = good_gguf.read_bytes()
    bad = tmp_path / "arch.gguf"
    bad.write_bytes(data.replace(b"\x05\x00\x00\x00\x00\x00\x00\x00llama", b"\x05\x00\x00\x00\x00\x00\x00\x00llamx", 1))
    err = _load_fails(bad, "llamx")
    assert "qwen2" in str(err) and "gemma3" in str(err)


def test_header_parse_is_fast_and_exposes_metadata(good_gguf):
    parsed = read_gguf(good_gguf)
    assert parsed.metadata["general.architecture"] == "llama"
    assert parsed.tensors["token_embd.weight"].qtype == Q.Q8_0


def test_missing_path():
    with pytest.raises(ModelLoadError, match="no model"):
        load_model("/nonexistent/model.gguf")


@pytest.fixture()
def hf_folder(tmp_path):
    return save_tiny("llama", tmp_path / "hf")[0]


def test_truncated_safetensors(hf_folder):
    weights = hf_folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _load_fails(hf_folder)


def test_safetensors_header_lies(hf_folder):
    weights = hf_folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(struct.pack("<Q", 1 << 40) + data[8:])
    _load_fails(hf_folder)


def test_hf_absurd_config(hf_folder):
    config = json.loads((hf_folder / "config.json").read_text())
    config["vocab_size"] = 10**12
    (hf_folder / "config.json").write_text(json.dumps(config))
    _load_fails(hf_folder, "vocab_size")


def test_hf_config_shapes_disagree_with_weights(hf_folder):
    config = json.loads((hf_folder / "config.json").read_text())
    config["intermediate_size"] = 4096
    (hf_folder / "config.json").write_text(json.dumps(config))
    _load_fails(hf_folder, "shape")


def test_hf_unknown_architecture(hf_folder):
    config = json.loads((hf_folder / "config.json").read_text())
    config["architectures"] = ["FalconForCausalLM"]
    (hf_folder / "config.json").write_text(json.dumps(config))
    err = _load_fails(hf_folder, "FalconForCausalLM")
    assert "Qwen2ForCausalLM" in str(err)


def test_hf_missing_tensor(hf_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    weights = hf_folder / "model.safetensors"
    state = load_file(str(weights))
    del state["model.layers.1.mlp.up_proj.weight"]
    save_file(state, str(weights))
    _load_fails(hf_folder, "missing tensors")


def test_hf_folder_without_config(tmp_path):
    (tmp_path / "empty").mkdir()
    _load_fails(tmp_path / "empty", "config.json")
