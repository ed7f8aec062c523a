"""Tiny random-weight models of every family, loaded from HF folders, against transformers in fp32.

Each runs through the paged-attention path three ways: one prefill, two chunks then decodes, and
two sequences sharing steps. All must match HF's logits and greedy argmax at every position.
"""

from __future__ import annotations

import pytest
import torch
from paged_runner import run_batched, run_chunked_then_decode, run_prefill
from tiny_models import VOCAB, hf_logits, save_tiny

from jongleur.models.loader import load_model

ARCHS = ["llama", "llama3", "mistral", "qwen2", "gemma3"]
PROMPT = [1, 17, 250, 3, 99, 42, 7, 300, 128, 64, 5, 211, 19, 77]  # 14 tokens > window 4 / 6
OTHER = [1, 9, 8, 7, 200, 31, 45, 260, 12, 3, 150]
ATOL = 2e-4


def assert_matches(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.shape == ref.shape
    diff = (ours - ref).abs().max().item()
    assert diff < ATOL, f"max abs logit diff {diff}"
    assert torch.equal(ours.argmax(-1), ref.argmax(-1))


@pytest.fixture(scope="module", params=ARCHS)
def pair(request, tmp_path_factory):
    folder, hf = save_tiny(request.param, tmp_path_factory.mktemp(request.param))
    loaded = load_model(folder, dtype=torch.float32)
    return request.param, loaded, hf


def test_config_and_format(pair):
    arch, loaded, _ = pair
    assert loaded.format == "hf"
    assert loaded.config.vocab_size == VOCAB
    assert loaded.model.kv_spec().num_layers == 2
    if arch == "gemma3":
        assert loaded.config.layer_sliding == (True, False)
        assert loaded.config.sliding_window == 4
    if arch == "mistral":
        assert loaded.config.layer_sliding == (True, True)
    if arch == "qwen2":
        assert loaded.config.attention_bias


def test_prefill(pair):
    _, loaded, hf = pair
    assert_matches(run_prefill(loaded.model, PROMPT), hf_logits(hf, PROMPT))


def test_chunked_prefill_then_decode(pair):
    _, loaded, hf = pair
    assert_matches(run_chunked_then_decode(loaded.model, PROMPT, (5, 3)), hf_logits(hf, PROMPT))


def test_two_sequences_in_one_batch(pair):
    _, loaded, hf = pair
    a, b = run_batched(loaded.model, PROMPT, OTHER)
    assert_matches(a, hf_logits(hf, PROMPT))
    assert_matches(b, hf_logits(hf, OTHER))


def test_bf16_runs_close(pair):
    """bf16 (the fast CPU/CUDA dtype) stays close to fp32; exactness is only promised in fp32."""
    _, loaded, hf = pair
    bf16 = load_model(loaded.source_path, dtype=torch.bfloat16)
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    ours = run_prefill(bf16.model, PROMPT)
    ref = hf_logits(hf, PROMPT)
    assert ours.dtype == torch.float32
    assert (ours - ref).abs().max().item() < 0.25
