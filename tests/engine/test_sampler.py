"""Sampler: greedy, random sampling, processors, seeded reproducibility, logprobs."""

from __future__ import annotations

import math

import pytest
import torch

from jongleur.engine.sampler import LOGPROB_FLOOR, Sampler, SamplingState
from jongleur.engine.types import SamplingParams

V = 50
EOS = 1


def state(prompt=None, output=None, eos=(EOS,), grammar=None, seed_offset=0, **kw) -> SamplingState:
    return SamplingState.create(
        SamplingParams(**kw), prompt or [], output if output is not None else [], eos, grammar, seed_offset
    )


def sample(logits: torch.Tensor, states: list[SamplingState], vocab: int | None = None) -> list[int]:
    return Sampler(vocab or logits.shape[1])(logits, states).token_ids


def test_greedy_is_argmax_with_lowest_id_on_ties() -> None:
    torch.manual_seed(0)
    logits = torch.randn(8, V)
    logits[3, 7] = logits[3, 9] = 100.0
    got = sample(logits, [state(temperature=0.0) for _ in range(8)])
    assert got == logits.argmax(-1).tolist()
    assert got[3] == 7


def test_logit_bias_forces_token_greedy_and_random() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, V) * 3
    states = [state(temperature=t, logit_bias={17: 100.0}) for t in (0.0, 0.7, 1.0, 2.0)]
    assert sample(logits, states) == [17] * 4
    # a -100 bias removes a token that would otherwise win
    logits = torch.zeros(1, V)
    logits[0, 5] = 10.0
    assert sample(logits, [state(temperature=0.0, logit_bias={5: -100.0})]) != [5]


@pytest.mark.parametrize("seeded", [False, True])
def test_top_k_1_and_tiny_top_p_equal_greedy(seeded: bool) -> None:
    torch.manual_seed(1)
    logits = torch.randn(16, 300)
    greedy = logits.argmax(-1).tolist()
    seed = 5 if seeded else None
    assert sample(logits, [state(top_k=1, seed=seed) for _ in range(16)]) == greedy
    assert sample(logits, [state(top_p=1e-6, seed=seed) for _ in range(16)]) == greedy
    assert (
        sample(logits, [state(top_p=1e-6, top_k=10, temperature=1.5, seed=seed) for _ in range(16)]) == greedy
    )


def test_top_p_keeps_the_nucleus_and_widens_past_first_candidates() -> None:
    # 200 nearly equally likely tokens: top_p=0.5 needs ~100 of them, more than the first 64 candidates
    logits = torch.full((1, 1000), -math.inf)
    logits[0, :200] = -torch.arange(200) * 1e-3
    probs = torch.softmax(logits[0], -1)
    nucleus = int((probs.cumsum(0) - probs < 0.5).sum())
    torch.manual_seed(0)
    seen = {sample(logits, [state(top_p=0.5)])[0] for _ in range(400)}
    assert seen <= set(range(nucleus)) and len(seen) > 64


def test_top_k_restricts_to_k_best() -> None:
    logits = torch.arange(V, dtype=torch.float32).unsqueeze(0) / 10
    torch.manual_seed(0)
    seen = {sample(logits, [state(top_k=3)])[0] for _ in range(200)}
    assert seen == {V - 1, V - 2, V - 3}


def test_min_p_drops_unlikely_tokens() -> None:
    # probs proportional to 8, 4, 1, 1: min_p 0.3 keeps tokens with p >= 0.3 * p_max -> {0, 1}
    logits = torch.log(torch.tensor([[8.0, 4.0, 1.0, 1.0]])).repeat(2000, 1)
    torch.manual_seed(0)
    got = sample(logits, [state(min_p=0.3) for _ in range(2000)])
    assert set(got) == {0, 1}
    assert abs(got.count(0) / 2000 - 8 / 12) < 0.04


def test_penalties_match_hand_computed_reference() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0, -2.0, 1.0]])
    prompt, output = [0, 1], [2, 2, 3]
    s = state(
        prompt,
        output,
        repetition_penalty=2.0,
        presence_penalty=0.5,
        frequency_penalty=0.25,
        logit_bias={5: 1.5},
    )
    got = Sampler(6).processed_logits(logits, [s])[0]
    # bias first: token 5 -> 2.5. Repetition (prompt + output = {0, 1, 2, 3}): positive / 2,
    # negative * 2. Presence / frequency over output counts {2: 2, 3: 1}.
    want = torch.tensor(
        [
            2.0 / 2,
            -1.0 * 2,
            0.5 / 2 - 0.5 - 0.25 * 2,
            3.0 / 2 - 0.5 - 0.25 * 1,
            -2.0,
            2.5,
        ]
    )
    torch.testing.assert_close(got, want)
    # the same state after more output (incremental) and after a rollback (shrunk list)
    output.append(4)
    got = Sampler(6).processed_logits(logits, [s])[0]
    assert got[4].item() == pytest.approx(-2.0 * 2 - 0.5 - 0.25)
    del output[1:]
    got = Sampler(6).processed_logits(logits, [s])[0]
    torch.testing.assert_close(got[2:5], torch.tensor([0.5 / 2 - 0.75, 3.0, -2.0]))


def test_min_tokens_blocks_eos_and_stop_ids() -> None:
    logits = torch.zeros(1, V)
    logits[0, EOS] = 50.0
    logits[0, 7] = 40.0
    logits[0, 9] = 30.0
    output: list[int] = []
    s = state(output=output, temperature=0.0, min_tokens=2, stop_token_ids=(7,))
    assert sample(logits, [s]) == [9]
    output.append(9)
    assert sample(logits, [s]) == [9]
    output.append(9)
    assert sample(logits, [s]) == [EOS]  # min_tokens reached
    # random sampling too
    torch.manual_seed(0)
    assert EOS not in sample(logits.repeat(64, 1), [state(min_tokens=1) for _ in range(64)])


def test_seeded_rows_do_not_depend_on_the_batch() -> None:
    vocab = 2000
    torch.manual_seed(3)
    mine = torch.randn(vocab) * 2
    variants = [
        {"seed": 42},
        {"seed": 42, "top_p": 0.9},
        {"seed": 42, "top_k": 40, "temperature": 0.7},
        {"seed": 42, "min_p": 0.05, "repetition_penalty": 1.3},
    ]
    for kw in variants:
        s_alone = state([5, 6], **kw)
        alone_seq = [sample(mine.unsqueeze(0), [s_alone])[0] for _ in range(5)]
        # the same request at position 7 of 16, among seeded and unseeded random rows
        s_batch = state([5, 6], **kw)
        batch_seq = []
        for step in range(5):
            logits = torch.randn(16, vocab) * 3
            logits[7] = mine
            others = [
                state(seed=step * 100 + i if i % 2 else None, top_p=0.8 if i % 3 else 1.0) for i in range(16)
            ]
            others[7] = s_batch
            batch_seq.append(sample(logits, others)[7])
        assert batch_seq == alone_seq, kw


def test_n_choices_with_seed_differ_but_reproduce() -> None:
    logits = torch.zeros(4, 1000)
    a = sample(logits, [state(seed=9, seed_offset=i) for i in range(4)])
    b = sample(logits, [state(seed=9, seed_offset=i) for i in range(4)])
    assert a == b and len(set(a)) > 1


@pytest.mark.parametrize("seeded", [False, True])
def test_temperature_sampling_matches_distribution(seeded: bool) -> None:
    base = torch.tensor([1.0, 0.5, 0.0, -1.0])
    for temperature in (1.0, 0.5, 2.0):
        want = torch.softmax(base / temperature, -1)
        n = 1500 if seeded else 4000
        torch.manual_seed(1234)
        states = [state(temperature=temperature, seed=i if seeded else None) for i in range(n)]
        got = torch.bincount(torch.tensor(sample(base.repeat(n, 1), states)), minlength=4).float()
        expected = want * n
        chi2 = float(((got - expected) ** 2 / expected).sum())
        assert chi2 < 16.3, (temperature, got, expected)  # 3 dof, p = 0.001


def test_logprobs_are_raw_log_softmax_sorted() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, V + 6)
    logits[:, V:] = 100.0  # padding columns: ignored
    states = [
        state(logprobs=5, temperature=0.0, repetition_penalty=2.0, prompt=[0, 1, 2]),
        state(logprobs=0, temperature=0.3, logit_bias={3: 100.0}),
        state(temperature=0.0),
    ]
    result = Sampler(V)(logits, states)
    ref = torch.log_softmax(logits[:, :V], -1)
    for r in range(2):
        lp = result.logprobs[r]
        assert lp is not None and lp.token_id == result.token_ids[r]
        assert lp.logprob == pytest.approx(ref[r, lp.token_id].item(), abs=1e-5)
    top = result.logprobs[0].top
    assert len(top) == 5 and [t for t, _ in top] == ref[0].topk(5).indices.tolist()
    assert [v for _, v in top] == sorted((v for _, v in top), reverse=True)
    assert result.logprobs[1].top == () and result.token_ids[1] == 3
    assert result.logprobs[2] is None


def test_no_nan_with_minus_inf_rows_and_huge_bias() -> None:
    logits = torch.full((3, V), -math.inf)
    logits[1, 4] = 0.0
    logits[2] = torch.randn(V) * 1e4
    states = [
        state(logprobs=3),
        state(logprobs=3, logit_bias={6: 100.0}, temperature=0.01),
        state(logprobs=3, logit_bias={i: -100.0 for i in range(V)}, top_p=0.5),
    ]
    result = Sampler(V)(logits, states)
    assert all(0 <= t < V for t in result.token_ids)
    assert result.token_ids[1] == 4  # 6 is impossible (-inf + 100 stays -inf)
    for lp in result.logprobs:
        assert lp is not None
        values = [lp.logprob] + [v for _, v in lp.top]
        assert all(math.isfinite(v) and v >= LOGPROB_FLOOR for v in values)


def test_vocab_padding_never_sampled() -> None:
    logits = torch.zeros(64, V + 14)
    logits[:, V:] = 30.0
    torch.manual_seed(0)
    for kw in ({"temperature": 0.0}, {}, {"top_p": 0.9}, {"top_k": 5}, {"seed": 1}):
        assert max(sample(logits, [state(**kw) for _ in range(64)], vocab=V)) < V


class OnlyTokens:
    """A stand-in grammar allowing a fixed set of tokens."""

    def __init__(self, allowed: list[int]) -> None:
        self.allowed = allowed

    def fill_bitmask(self, out: torch.Tensor) -> None:
        out.zero_()
        for t in self.allowed:
            out[t // 32] |= 1 << (t % 32) if t % 32 != 31 else -(1 << 31)


def test_grammar_mask_and_conflict_with_min_tokens() -> None:
    torch.manual_seed(0)
    logits = torch.randn(32, 70) * 5
    allowed = [2, 33, 63, 69]
    got = sample(logits, [state(grammar=OnlyTokens(allowed), temperature=t) for t in [0.0, 1.0] * 16])
    assert set(got) <= set(allowed)
    # the grammar allows only EOS, min_tokens bans it: the grammar wins
    s = state(grammar=OnlyTokens([EOS]), min_tokens=3, temperature=0.0)
    assert sample(logits[:1], [s]) == [EOS]


def test_prompt_logprobs() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, V + 2)
    targets = [3, 9, 0, 49]
    got = Sampler(V).prompt_logprobs(logits, targets, 2)
    ref = torch.log_softmax(logits[:, :V], -1)
    for i, lp in enumerate(got):
        assert lp.token_id == targets[i]
        assert lp.logprob == pytest.approx(ref[i, targets[i]].item(), abs=1e-5)
        assert [t for t, _ in lp.top] == ref[i].topk(2).indices.tolist()
