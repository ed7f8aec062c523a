"""The whole engine (scheduler, paged KV, runner, sampler) against Hugging Face transformers.

Tiny random-weight models, fp32: greedy tokens must equal the reference and logprobs stay close,
alone, in a batch of 16 mixed-length requests, with and without prefix caching, with chunked
prefill, and after forced preemption. Seeded sampling is reproducible across batch compositions.
`JONGLEUR_TEST_DEVICE=cuda` runs the same checks on a GPU (engine and reference both there).
"""

from __future__ import annotations

import os
import random

import pytest
import torch

from jongleur.engine.config import EngineConfig
from jongleur.engine.core import EngineCore
from jongleur.engine.types import EngineRequest, FinishReason, Priority, SamplingParams
from jongleur.models.loader import load_model

NEW_TOKENS = 12
DEVICE = os.environ.get("JONGLEUR_TEST_DEVICE", "cpu")


def hf_greedy(hf_model, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    ids = list(prompt)
    out, logprobs = [], []
    with torch.no_grad():
        for _ in range(n):
            logits = hf_model(torch.tensor([ids], device=DEVICE)).logits[0, -1].float()
            token = int(torch.argmax(logits))
            logprobs.append(float(torch.log_softmax(logits, -1)[token]))
            out.append(token)
            ids.append(token)
    return out, logprobs


def make_core(model_dir, **overrides) -> EngineCore:
    loaded = load_model(model_dir, dtype=torch.float32, device=DEVICE)
    config = EngineConfig(**{"num_blocks": 256, "block_size": 4, "dtype": "float32", "device": DEVICE, **overrides})
    return EngineCore(loaded.model, config, eos_token_ids=loaded.config.eos_token_ids)


def run_all(core: EngineCore, requests: list[EngineRequest], max_steps: int = 5000) -> dict[str, list]:
    tokens: dict[str, list[int]] = {r.request_id: [] for r in requests}
    logprobs: dict[str, list[float]] = {r.request_id: [] for r in requests}
    finished: dict[str, FinishReason] = {}
    for request in requests:
        core.add_request(request)
    for _ in range(max_steps):
        if not core.has_work():
            break
        for out in core.step():
            tokens[out.request_id].extend(out.new_token_ids)
            if out.logprobs:
                logprobs[out.request_id].extend(lp.logprob for lp in out.logprobs)
            if out.finish_reason is not None:
                finished[out.request_id] = out.finish_reason
        core.check_integrity()
    assert not core.has_work()
    assert set(finished) == {r.request_id for r in requests}
    core.check_integrity()
    return {"tokens": tokens, "logprobs": logprobs, "finished": finished}


def greedy_request(rid: str, prompt: list[int], priority: Priority = Priority.NORMAL) -> EngineRequest:
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True, logprobs=0)
    return EngineRequest(rid, prompt, params, priority=priority)


@pytest.fixture(scope="module", params=["llama", "qwen2", "gemma3"])
def arch_case(request, tiny_model_dir, tiny_qwen2_dir, tiny_gemma3_dir):
    import transformers

    model_dir = {"llama": tiny_model_dir, "qwen2": tiny_qwen2_dir, "gemma3": tiny_gemma3_dir}[request.param]
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).to(DEVICE).eval()
    rng = random.Random(7)
    vocab = hf.config.vocab_size
    shared = [rng.randrange(3, vocab) for _ in range(9)]
    prompts = []
    for i in range(16):
        length = rng.randrange(1, 40)
        body = [rng.randrange(3, vocab) for _ in range(length)]
        prompts.append(shared + body if i % 3 == 0 else body)
    refs = [hf_greedy(hf, p, NEW_TOKENS) for p in prompts]
    return model_dir, prompts, refs


def check_against_reference(result, refs: dict[int, tuple[list[int], list[float]]], atol=2e-3):
    for i, (ref_tokens, ref_logprobs) in refs.items():
        assert result["tokens"][f"r{i}"] == ref_tokens, f"request {i} differs from transformers"
        got = torch.tensor(result["logprobs"][f"r{i}"])
        assert torch.allclose(got, torch.tensor(ref_logprobs), atol=atol), f"request {i} logprobs"


def test_alone_matches_hf(arch_case):
    model_dir, prompts, refs = arch_case
    core = make_core(model_dir)
    for i in (0, 1, 5):
        result = run_all(core, [greedy_request(f"r{i}", prompts[i])])
        check_against_reference(result, {i: refs[i]})


@pytest.mark.parametrize("prefix_caching", [True, False])
def test_batch_of_16_matches_hf(arch_case, prefix_caching):
    model_dir, prompts, refs = arch_case
    core = make_core(model_dir, enable_prefix_caching=prefix_caching, max_num_batched_tokens=64)
    result = run_all(core, [greedy_request(f"r{i}", p) for i, p in enumerate(prompts)])
    check_against_reference(result, dict(enumerate(refs)))
    if prefix_caching:
        # Run again: the prompts' full blocks are now cached and must give identical results.
        again = run_all(core, [greedy_request(f"r{i}", p) for i, p in enumerate(prompts)])
        check_against_reference(again, dict(enumerate(refs)))
        assert core.stats().prefix_cache_hits > 0


def test_preemption_gives_identical_output(arch_case):
    model_dir, prompts, refs = arch_case
    # 40 blocks of 4 tokens cannot hold 16 sequences of up to ~60 tokens: the scheduler must preempt.
    core = make_core(model_dir, num_blocks=40, max_num_batched_tokens=32)
    result = run_all(core, [greedy_request(f"r{i}", p) for i, p in enumerate(prompts)])
    assert core.stats().preempted_total > 0
    check_against_reference(result, dict(enumerate(refs)))


def test_seeded_sampling_is_reproducible_in_any_batch(tiny_model_dir):
    core = make_core(tiny_model_dir)
    params = SamplingParams(max_tokens=10, temperature=0.9, top_p=0.95, seed=1234, ignore_eos=True)
    prompt = [5, 9, 27, 40, 41]
    alone = run_all(core, [EngineRequest("seeded", prompt, params)])["tokens"]["seeded"]
    rng = random.Random(3)
    others = [
        EngineRequest(f"o{i}", [rng.randrange(3, 300) for _ in range(rng.randrange(1, 30))],
                      SamplingParams(max_tokens=rng.randrange(1, 15), temperature=1.0, ignore_eos=True))
        for i in range(15)
    ]
    batched = run_all(core, [*others[:7], EngineRequest("seeded", prompt, params), *others[7:]])
    assert batched["tokens"]["seeded"] == alone


def test_n_choices_share_prompt_and_differ(tiny_model_dir):
    core = make_core(tiny_model_dir)
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=7, n=3, ignore_eos=True)
    request = EngineRequest("multi", list(range(3, 40)), params)
    core.add_request(request)
    choices: dict[int, list[int]] = {0: [], 1: [], 2: []}
    done = set()
    while core.has_work():
        for out in core.step():
            choices[out.index].extend(out.new_token_ids)
            if out.finished:
                done.add(out.index)
        core.check_integrity()
    assert done == {0, 1, 2}
    assert all(len(c) == 8 for c in choices.values())
    assert len({tuple(c) for c in choices.values()}) > 1


def test_abort_at_every_stage_frees_blocks(tiny_model_dir):
    core = make_core(tiny_model_dir, max_num_batched_tokens=16, max_num_seqs=4)
    free_before = core.kv.num_free_blocks
    long_prompt = list(range(3, 200))
    core.add_request(greedy_request("prefilling", long_prompt))
    core.add_request(greedy_request("decoding", [5, 6, 7]))
    core.step()  # "prefilling" is mid-prefill (16-token budget)
    for _ in range(3):
        core.step()
    core.add_request(greedy_request("waiting", [8, 9]))
    outs = core.abort("prefilling") + core.abort("decoding") + core.abort("waiting")
    assert {o.finish_reason for o in outs} == {FinishReason.ABORT}
    assert not core.has_work()
    core.check_integrity()
    cached_free = core.kv.num_free_blocks
    assert cached_free == free_before
