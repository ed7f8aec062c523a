"""The int8 mode's packed weights cached beside the converted copy: a warm start reuses them, and
anything that does not match (other values, shapes or order) is packed again."""

from __future__ import annotations

import pytest
import torch
from gguf_writer import Q, write_gguf
from tiny_model import gguf_round_trip
from tiny_models import tiny_hf_model

from jongleur.engine.config import EngineConfig
from jongleur.engine.core import EngineCore
from jongleur.engine.types import EngineRequest, SamplingParams
from jongleur.models import packed_cache
from jongleur.models.cpu_kernels import kernels_available
from jongleur.models.loader import load_model
from jongleur.models.packed_cache import PackedWeightCache
from jongleur.models.q5 import Q5Weight
from jongleur.models.q8 import Q8Weight
from jongleur.models.weight_cache import WeightCache

pytestmark = pytest.mark.skipif(not kernels_available(), reason="the CPU kernels need AVX2+FMA and a C compiler")


def test_second_pass_is_served_from_the_cache_and_mismatches_are_packed_again(tmp_path, monkeypatch):
    source = tmp_path / "model.gguf"
    source.write_bytes(b"any file: the cache is keyed by its digest")
    torch.manual_seed(0)
    weights = [gguf_round_trip(torch.randn(40, 64)), torch.randn(24, 96)]  # one Q5_0, one int8
    first = PackedWeightCache(WeightCache(tmp_path / "cache"), source)
    packed = [first.quantize(w) for w in weights]
    assert [type(p) for p in packed] == [Q5Weight, Q8Weight] and first.hits == 0
    first.save()

    calls = []
    real = packed_cache.quantize_weight
    monkeypatch.setattr(packed_cache, "quantize_weight", lambda w: calls.append(w.shape) or real(w))
    second = PackedWeightCache(WeightCache(tmp_path / "cache"), source)
    again = [second.quantize(w) for w in weights]
    assert second.hits == 2 and calls == []
    for a, b in zip(packed, again, strict=True):
        assert type(a) is type(b) and torch.equal(a.dequantize(), b.dequantize())

    third = PackedWeightCache(WeightCache(tmp_path / "cache"), source)
    changed = weights[1].clone()
    changed[0, 0] += 1.0  # same shape, other values: sampled checksum differs
    third.quantize(weights[1])  # asked out of order: entry 0 holds another shape
    third.quantize(changed)
    assert third.hits == 0 and calls == [(24, 96), (24, 96)]
    torch.testing.assert_close(third.made[1].dequantize(), real(changed).dequantize())


def test_engine_warm_start_reuses_packed_weights_with_the_same_results(tmp_path, monkeypatch):
    path = tmp_path / "tiny.gguf"
    write_gguf(tiny_hf_model("qwen2"), "qwen2", path, {"blk": Q.Q5_0, "token_embd": Q.Q8_0})
    config = EngineConfig(dtype="int8", num_blocks=64, block_size=4, max_num_batched_tokens=64)

    def run() -> tuple[list[int], PackedWeightCache]:
        loaded = load_model(path, dtype=torch.float32, cache_dir=tmp_path / "cache")
        packed = PackedWeightCache(WeightCache(tmp_path / "cache"), path)
        core = EngineCore(loaded.model, config, eos_token_ids=(2,), packed_weights=packed)
        core.add_request(EngineRequest("r", [5, 9, 3, 7, 11], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True)))
        tokens = []
        while core.has_work():
            for out in core.step():
                tokens += out.new_token_ids
        return tokens, packed

    cold, packed = run()
    assert packed.hits == 0 and len(packed.made) > 0
    assert any(isinstance(p, Q5Weight) for p in packed.made)
    monkeypatch.setattr(packed_cache, "quantize_weight", lambda w: pytest.fail("a warm start packed a weight"))
    warm, packed = run()
    assert packed.hits == len(packed.made) and warm == cold
