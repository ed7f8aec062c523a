"""Tiny GGUFs written like llama.cpp (Q/K permutation, Gemma norms, quantized tensors) vs transformers."""

from __future__ import annotations

import pytest
import torch
from gguf_writer import Q, write_gguf
from paged_runner import run_chunked_then_decode, run_prefill
from tiny_models import VOCAB, hf_logits, tiny_hf_model

from jongleur.models.loader import load_model

PROMPT = [1, 17, 250, 3, 99, 42, 7, 300, 128, 64, 5, 211, 19, 77]
QTYPES = {
    "token_embd": Q.Q8_0,
    "attn_q.": Q.Q8_0,
    "attn_k.": Q.F16,
    "attn_v": Q.BF16,
    "ffn_gate": Q.Q5_0,
    "ffn_up": Q.Q4_0,
    "ffn_down": Q.Q8_0,
    "output.weight": Q.F16,
}


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma3"])
def written(request, tmp_path_factory):
    arch = request.param
    folder = tmp_path_factory.mktemp(f"gguf-{arch}")
    ref = write_gguf(tiny_hf_model(f"{arch}-gguf" if arch == "gemma3" else arch), arch, folder / f"tiny-{arch}.gguf", QTYPES)
    return arch, folder / f"tiny-{arch}.gguf", ref, folder / "cache"


def test_gguf_matches_hf(written):
    arch, path, ref, cache = written
    loaded = load_model(path, dtype=torch.float32, cache_dir=cache, progress=False)
    assert loaded.format == "gguf" and loaded.source_path == path
    assert loaded.config.architecture == arch
    assert loaded.config.vocab_size == VOCAB
    assert loaded.config.eos_token_ids == (2,)
    assert loaded.metadata["general.architecture"] == arch
    if arch == "gemma3":
        assert loaded.config.layer_sliding == (True, True) and loaded.config.sliding_window == 4
    expected = hf_logits(ref, PROMPT)
    for ours in (run_prefill(loaded.model, PROMPT), run_chunked_then_decode(loaded.model, PROMPT, (6, 2))):
        assert (ours - expected).abs().max().item() < 2e-4
        assert torch.equal(ours.argmax(-1), expected.argmax(-1))


def test_warm_cache_gives_identical_weights(written):
    _, path, _, cache = written
    cold = load_model(path, dtype=torch.float32, cache_dir=cache, progress=False)
    warm = load_model(path, dtype=torch.float32, cache_dir=cache, progress=False)
    assert warm.from_cache
    assert warm.config == cold.config
    for (name, a), (_, b) in zip(cold.model.state_dict().items(), warm.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_corrupt_cache_entry_falls_back_to_source(written):
    _, path, _, cache = written
    load_model(path, dtype=torch.float32, cache_dir=cache, progress=False)
    entry = next(cache.glob("*-float32.safetensors"))
    data = bytearray(entry.read_bytes())
    data[-3] ^= 0xFF  # flip bits in the last tensor
    entry.write_bytes(bytes(data))
    reloaded = load_model(path, dtype=torch.float32, cache_dir=cache, progress=False)
    assert not reloaded.from_cache
    again = load_model(path, dtype=torch.float32, cache_dir=cache, progress=False)
    assert again.from_cache  # rewritten


def test_cache_keys_on_dtype_and_content(written, tmp_path):
    _, path, _, _ = written
    cache = tmp_path / "cache"
    load_model(path, dtype=torch.float32, cache_dir=cache, progress=False)
    assert not load_model(path, dtype=torch.bfloat16, cache_dir=cache, progress=False).from_cache
    copy = tmp_path / "copy.gguf"
    data = bytearray(path.read_bytes())
    copy.write_bytes(bytes(data))
    assert load_model(copy, dtype=torch.float32, cache_dir=cache, progress=False).from_cache  # same content
