"""The engine's `int8` dtype against transformers running the same int8 weights (dequantized).

int8 rounds each weight once, at load; everything after must be exact: the reference is the HF
model with every linear (and the LM head) replaced by `dequantize(quantize(w))` in fp32. Greedy
tokens equal, logprobs close, alone and in a batch of 16 with prefix caching and preemption.
"""

from __future__ import annotations

import random

import pytest
import torch
from test_engine_vs_hf import (
    NEW_TOKENS,
    check_against_reference,
    greedy_request,
    hf_greedy,
    make_core,
    run_all,
)

from jongleur.engine.core import resolve_dtype
from jongleur.models.cpu_kernels import kernels_available
from jongleur.models.q8 import quantize

pytestmark = pytest.mark.skipif(not kernels_available(), reason="int8 kernel needs AVX2+FMA and a C compiler")


def int8_reference(model_dir):
    import transformers

    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        for module in hf.modules():
            if isinstance(module, torch.nn.Linear) and module is not hf.lm_head:
                module.weight.copy_(quantize(module.weight).dequantize())
        head = quantize(hf.get_input_embeddings().weight).dequantize()
        hf.lm_head.weight = torch.nn.Parameter(head)  # untied: the embedding lookup stays dense
    return hf


@pytest.fixture(scope="module", params=["qwen2", "gemma3"])
def int8_case(request, tiny_qwen2_dir, tiny_gemma3_dir):
    model_dir = {"qwen2": tiny_qwen2_dir, "gemma3": tiny_gemma3_dir}[request.param]
    hf = int8_reference(model_dir)
    rng = random.Random(11)
    prompts = [[rng.randrange(3, hf.config.vocab_size) for _ in range(rng.randrange(1, 40))] for _ in range(16)]
    return model_dir, prompts, [hf_greedy(hf, p, NEW_TOKENS) for p in prompts]


def test_int8_alone_and_batched_match_reference(int8_case):
    model_dir, prompts, refs = int8_case
    core = make_core(model_dir, dtype="int8", max_num_batched_tokens=64)
    assert core.runner.model.model.layers[0].mlp.quantized is not None  # really running int8
    alone = run_all(core, [greedy_request("r0", prompts[0])])
    check_against_reference(alone, {0: refs[0]})
    batched = run_all(core, [greedy_request(f"r{i}", p) for i, p in enumerate(prompts)])
    check_against_reference(batched, dict(enumerate(refs)))


def test_int8_after_preemption_matches_reference(int8_case):
    model_dir, prompts, refs = int8_case
    core = make_core(model_dir, dtype="int8", num_blocks=40, max_num_batched_tokens=32)
    result = run_all(core, [greedy_request(f"r{i}", p) for i, p in enumerate(prompts)])
    assert core.stats().preempted_total > 0
    check_against_reference(result, dict(enumerate(refs)))


@pytest.fixture(scope="module")
def q5_model_dir(tmp_path_factory, tiny_qwen2_dir):
    """The tiny Qwen2 with every matrix (the tied embedding too) rounded through GGUF's Q5_0, as a
    Q5_0 GGUF's tensors reach the engine: int8 mode keeps them all as Q5_0 blocks, adding no rounding."""
    import shutil

    import transformers
    from tiny_model import gguf_round_trip

    out = tmp_path_factory.mktemp("tiny-qwen2-q5")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tiny_qwen2_dir, torch_dtype=torch.float32)
    with torch.no_grad():
        for param in hf.parameters():
            if param.dim() == 2:
                param.copy_(gguf_round_trip(param.detach()))
    hf.save_pretrained(out, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_qwen2_dir / name, out / name)
    return out


def check_near_reference(hf, prompts, result, tol=0.05):
    """Teacher-forced: each token we chose is (within tol) the reference's most likely one, and our
    logprob for it is within tol of the reference's, at every step (so one near-tie taken the
    other way does not send the rest of the comparison down another path)."""
    for i, prompt in enumerate(prompts):
        tokens, ours = result["tokens"][f"r{i}"], torch.tensor(result["logprobs"][f"r{i}"])
        assert len(tokens) == NEW_TOKENS
        with torch.no_grad():
            logits = hf(torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1].float()
        ref = torch.log_softmax(logits, -1)
        chosen = ref[torch.arange(len(tokens)), torch.tensor(tokens)]
        assert (chosen >= ref.max(-1).values - tol).all(), f"request {i} took a token the reference ranks low"
        assert (chosen - ours).abs().max() < tol, f"request {i} logprobs"


def test_q5_0_weights_run_as_q5_and_match_reference(q5_model_dir):
    """Q5_0 weights meet their activations as int8 blocks of 32 (as llama.cpp does). The reference
    rounds every linear's input the same way; the order of fp32 sums still moves a value across a
    rounding edge now and then (a 1e-6 relative nudge of the reference's inputs moves its logprobs
    by ~0.02 on this tiny model), so the check is teacher-forced with a tolerance."""
    import transformers
    from tiny_model import int8_blocks

    from jongleur.models.q5 import Q5Weight

    hf = transformers.AutoModelForCausalLM.from_pretrained(q5_model_dir, torch_dtype=torch.float32).eval()
    for module in hf.modules():
        if isinstance(module, torch.nn.Linear):
            module.register_forward_pre_hook(lambda _module, args: (int8_blocks(args[0]),))
    rng = random.Random(5)
    prompts = [[rng.randrange(3, hf.config.vocab_size) for _ in range(rng.randrange(1, 40))] for _ in range(8)]
    core = make_core(q5_model_dir, dtype="int8", max_num_batched_tokens=64)
    model = core.runner.model
    assert isinstance(model.model.layers[0].mlp.quantized, Q5Weight)
    assert isinstance(model.model.layers[0].self_attn.quantized_qkv[0], Q5Weight)
    assert isinstance(model.quantized_head, Q5Weight)
    check_near_reference(hf, prompts[:1], run_all(core, [greedy_request("r0", prompts[0])]))
    check_near_reference(hf, prompts, run_all(core, [greedy_request(f"r{i}", p) for i, p in enumerate(prompts)]))


def test_q5_results_do_not_depend_on_how_the_step_was_scheduled(q5_model_dir):
    """Int8 activations turn a last-bit difference into a visible one, so a token's logprobs must be
    the same bits alone, in a batch, in small prefill chunks and after a prefix-cache hit (the
    attention of every row runs as its own query). Seeded sampling relies on it."""
    rng = random.Random(9)
    prompts = [[rng.randrange(3, 300) for _ in range(n)] for n in (33, 17, 40, 5)]
    alone = {}
    for i, p in enumerate(prompts):
        core = make_core(q5_model_dir, dtype="int8", enable_prefix_caching=False)
        alone[i] = run_all(core, [greedy_request(f"r{i}", p)])
    core = make_core(q5_model_dir, dtype="int8", max_num_seqs=4, max_num_batched_tokens=8)
    batched = run_all(core, [greedy_request(f"r{i}", p) for i, p in enumerate(prompts)])
    cached = run_all(core, [greedy_request(f"r{i}", p) for i, p in enumerate(prompts)])
    assert core.stats().prefix_cache_hits > 0
    for i in range(len(prompts)):
        for result in (batched, cached):
            assert result["tokens"][f"r{i}"] == alone[i]["tokens"][f"r{i}"]
            assert result["logprobs"][f"r{i}"] == alone[i]["logprobs"][f"r{i}"]  # bit for bit


def test_int8_is_refused_on_cuda_with_a_clear_error():
    with pytest.raises(ValueError, match="CPU mode"):
        resolve_dtype("int8", torch.device("cuda"))


def test_auto_picks_int8_on_cpus_without_native_bf16(monkeypatch):
    from jongleur.engine.core import resolve_weight_mode
    from jongleur.models import loader

    monkeypatch.setattr(loader, "_cpu_has_bf16", lambda: False)
    assert resolve_weight_mode("auto", torch.device("cpu")) == "int8"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32  # int8 weights, fp32 activations
    monkeypatch.setattr(loader, "_cpu_has_bf16", lambda: True)
    assert resolve_weight_mode("auto", torch.device("cpu")) == "bfloat16"
    assert resolve_weight_mode("auto", torch.device("cuda")) == "bfloat16"
    assert resolve_weight_mode("float32", torch.device("cpu")) == "float32"
