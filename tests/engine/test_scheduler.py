"""Scheduler behaviour, driven by simulated steps (no model): batching, chunked prefill,
priority, fair share, preemption and resume, admission control, abort, n > 1.

`Sim.step()` plays the engine core: schedule, "run", update, append a fake token to every
sequence whose chunk reached its last known token, finish at max_tokens; then it checks the
scheduler's and the KV pool's integrity.
"""

from __future__ import annotations

import itertools
import zlib

import pytest

from jongleur.engine.errors import CapacityError, InvalidRequestError, RequestTooLargeError
from jongleur.engine.fair_share import FairShare
from jongleur.engine.kv_cache import KVCacheManager
from jongleur.engine.scheduler import Scheduler, SchedulerConfig, SchedulerOutput
from jongleur.engine.sequence import Sequence, SequenceStatus
from jongleur.engine.types import FinishReason, Priority, SamplingParams


def fake_token(seq: Sequence) -> int:
    """Deterministic per (request, choice, position): a resumed sequence continues identically."""
    return zlib.crc32(f"{seq.request_id}/{seq.index}/{seq.num_output_tokens}".encode()) % 30_000


class Sim:
    def __init__(
        self, num_blocks: int = 256, block_size: int = 4, prefix_caching: bool = True, **config: object
    ) -> None:
        config.setdefault("max_model_len", 4096)
        self.kv = KVCacheManager(num_blocks, block_size, prefix_caching)
        self.sched = Scheduler(SchedulerConfig(**config), self.kv)  # type: ignore[arg-type]
        self.steps = 0
        self.finished: list[Sequence] = []
        self.served: dict[str, int] = {}  # tenant -> tokens computed
        self._ids = itertools.count()
        self._clock = itertools.count()

    def add(
        self,
        prompt: list[int] | int,
        max_tokens: int = 4,
        *,
        n: int = 1,
        priority: Priority = Priority.NORMAL,
        tenant: str = "t",
        weight: float = 1.0,
        salt: str = "",
    ) -> list[Sequence]:
        tokens = list(range(prompt)) if isinstance(prompt, int) else list(prompt)
        request_id = f"req{next(self._ids)}"
        arrival = float(next(self._clock))
        seqs = [
            Sequence(
                seq_id=next(self._ids),
                request_id=request_id,
                index=i,
                prompt_token_ids=list(tokens),
                sampling=SamplingParams(max_tokens=max_tokens, n=n),
                priority=priority,
                tenant=tenant,
                tenant_weight=weight,
                cache_salt=salt,
                arrival_time=arrival,
            )
            for i in range(n)
        ]
        self.sched.add(seqs)
        return seqs

    def step(self) -> SchedulerOutput:
        out = self.sched.schedule()
        assert out.num_batched_tokens <= self.sched.config.max_num_batched_tokens
        assert out.num_batched_tokens == sum(item.num_new_tokens for item in out.scheduled)
        assert len({item.seq.seq_id for item in out.scheduled}) == len(out.scheduled)
        for item in out.scheduled:
            seq = item.seq
            assert seq.status is SequenceStatus.RUNNING and item.num_new_tokens >= 1
            assert seq.num_computed_tokens + item.num_new_tokens <= seq.num_tokens
            assert len(seq.block_table) * self.kv.block_size >= seq.num_computed_tokens + item.num_new_tokens
            self.served[seq.tenant] = self.served.get(seq.tenant, 0) + item.num_new_tokens
        for seq in out.preempted:
            assert seq.status is SequenceStatus.WAITING and not seq.block_table
        self.sched.update_after_step(out)
        self.steps += 1
        for item in out.scheduled:
            seq = item.seq
            if seq.num_computed_tokens == seq.num_tokens:
                seq.append_token(fake_token(seq))
                if seq.num_output_tokens >= seq.sampling.max_tokens:
                    self.sched.finish(seq, FinishReason.LENGTH)
                    self.finished.append(seq)
        self.sched.check_integrity()
        return out

    def run(self, max_steps: int = 10_000) -> None:
        while self.sched.has_unfinished():
            assert self.steps < max_steps, "no progress"
            self.step()
        self.assert_drained()

    def assert_drained(self) -> None:
        self.sched.check_integrity()
        assert self.kv.num_free_blocks == self.kv.num_blocks


def scheduled_ids(out: SchedulerOutput) -> dict[int, int]:
    return {item.seq.seq_id: item.num_new_tokens for item in out.scheduled}


# ---- basics ---------------------------------------------------------------------------------
def test_runs_everything_to_completion_without_leaks() -> None:
    sim = Sim(max_num_batched_tokens=32, max_num_seqs=4)
    seqs = [s for i in range(10) for s in sim.add(5 + i, max_tokens=3 + i)]
    sim.run()
    assert all(s.num_output_tokens == s.sampling.max_tokens for s in seqs)
    assert all(s.finish_reason is FinishReason.LENGTH for s in seqs)
    assert sim.sched.stats().running == 0 and sim.sched.stats().kv_blocks_used == 0


def test_continuous_batching_admits_while_others_decode() -> None:
    sim = Sim(max_num_batched_tokens=64, max_num_seqs=8)
    (a,) = sim.add(10, max_tokens=20)
    sim.step()
    sim.step()
    (b,) = sim.add(list(range(100, 112)), max_tokens=5)
    out = sim.step()
    assert scheduled_ids(out) == {a.seq_id: 1, b.seq_id: 12}


# ---- admission control ----------------------------------------------------------------------
def test_rejects_requests_that_can_never_fit() -> None:
    sim = Sim(num_blocks=8, block_size=4, max_model_len=64)
    with pytest.raises(RequestTooLargeError):
        sim.add(60, max_tokens=10)  # over max_model_len
    with pytest.raises(RequestTooLargeError):
        sim.add(30, max_tokens=10)  # 39 tokens of KV > 32 in the pool
    for bad_weight in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidRequestError):
            sim.add(4, weight=bad_weight)
    sim.add(30, max_tokens=3)  # 32 tokens of KV: fits exactly
    assert sim.sched.num_waiting == 1
    sim.run()


def test_queue_full_raises_capacity_error_with_retry_after() -> None:
    sim = Sim(max_waiting=3, capacity_retry_after_s=2.5)
    sim.add(4)
    sim.add(4, n=2)
    with pytest.raises(CapacityError) as info:
        sim.add(4)
    assert info.value.retry_after_s == 2.5
    assert sim.sched.num_waiting == 3
    sim.sched.check_integrity()
    sim.run()
    sim.add(4)  # room again


# ---- priority -------------------------------------------------------------------------------
def test_priority_then_arrival_order() -> None:
    sim = Sim(max_num_batched_tokens=16, max_num_seqs=1)
    low = sim.add(4, priority=Priority.LOW)[0]
    normal1 = sim.add(4)[0]
    high = sim.add(4, priority=Priority.HIGH)[0]
    normal2 = sim.add(4)[0]
    sim.run()
    assert [s.seq_id for s in sim.finished] == [high.seq_id, normal1.seq_id, normal2.seq_id, low.seq_id]
    assert sim.sched.preempted_total == 0


def test_high_priority_arrival_preempts_when_batch_is_full() -> None:
    sim = Sim(max_num_batched_tokens=32, max_num_seqs=2)
    first = sim.add(6, max_tokens=10)[0]
    second = sim.add(6, max_tokens=10)[0]
    for _ in range(3):
        sim.step()
    kept = list(second.output_token_ids)
    (high,) = sim.add(list(range(50, 56)), max_tokens=3, priority=Priority.HIGH)
    hits_before = sim.kv.stats.hits
    out = sim.step()
    assert out.preempted == [second]  # the latest-arrived of the lowest class
    assert second.num_preemptions == 1 and second.output_token_ids == kept
    assert high.seq_id in scheduled_ids(out) and first.seq_id in scheduled_ids(out)
    while second.status is not SequenceStatus.RUNNING:
        sim.step()
    # On resume, prompt + outputs so far (6 + 4 tokens) are re-prefilled: 2 full blocks come from cache.
    assert second.num_cached_tokens == 0 and sim.kv.stats.hits - hits_before == 8
    sim.run()
    assert second.num_output_tokens == 10 and sim.sched.preempted_total == 1
    assert sim.finished[0] is high


def test_high_priority_arrival_preempts_when_blocks_are_short() -> None:
    sim = Sim(num_blocks=8, block_size=4, max_num_batched_tokens=64, max_num_seqs=8)
    low = sim.add(12, max_tokens=8, priority=Priority.LOW)[0]  # up to 5 blocks
    sim.step()
    (high,) = sim.add(list(range(50, 67)), max_tokens=4, priority=Priority.HIGH)  # 5 blocks; 4 free
    out = sim.step()
    assert low in out.preempted and high.seq_id in scheduled_ids(out)
    sim.run()
    assert low.num_output_tokens == 8


def test_equal_priority_never_preempted_for_a_waiting_request() -> None:
    sim = Sim(num_blocks=8, block_size=4, max_num_batched_tokens=32, max_num_seqs=2)
    sim.add(8, max_tokens=6)
    sim.add(8, max_tokens=6)
    sim.step()
    sim.add(8, max_tokens=2)  # batch full
    sim.add(8, max_tokens=2, priority=Priority.LOW)
    for _ in range(3):
        assert not sim.step().preempted
    sim.run()
    assert sim.sched.preempted_total == 0


# ---- preemption on block exhaustion ---------------------------------------------------------
def _outputs(sim: Sim) -> dict[str, list[int]]:
    return {s.request_id: s.output_token_ids for s in sim.finished}


def test_block_exhaustion_preempts_latest_and_resume_keeps_outputs() -> None:
    def scenario(num_blocks: int) -> Sim:
        sim = Sim(num_blocks=num_blocks, block_size=4, max_num_batched_tokens=64, max_num_seqs=8)
        for i in range(4):
            sim.add(list(range(i * 100, i * 100 + 10)), max_tokens=20)
        return sim

    big = scenario(256)
    big.run()
    assert big.sched.preempted_total == 0
    small = scenario(16)  # 4 x 30 tokens need 32 blocks: someone must be preempted
    preempted: list[Sequence] = []
    while small.sched.has_unfinished():
        out = small.step()
        for seq in out.preempted:
            running_arrivals = [s.arrival_time for s in small.sched.running]
            assert all(seq.arrival_time >= a for a in running_arrivals)  # the latest goes first
        preempted += out.preempted
        assert small.steps < 1000
    small.assert_drained()
    assert preempted and small.sched.preempted_total == len(preempted)
    assert _outputs(small) == _outputs(big)  # identical outputs, none lost


def test_block_exhaustion_preempts_lower_priority_first() -> None:
    sim = Sim(num_blocks=10, block_size=4, max_num_batched_tokens=64, max_num_seqs=8)
    high = sim.add(10, max_tokens=20, priority=Priority.HIGH)[0]  # arrives first...
    low = sim.add(list(range(100, 110)), max_tokens=20, priority=Priority.LOW)[0]
    while high.num_output_tokens < 20:
        out = sim.step()
        assert high not in out.preempted
    assert low.num_preemptions >= 1
    sim.run()


def test_no_prefix_caching_preemption_still_completes() -> None:
    sim = Sim(num_blocks=12, block_size=4, prefix_caching=False, max_num_batched_tokens=32, max_num_seqs=8)
    seqs = [sim.add(list(range(i * 50, i * 50 + 9)), max_tokens=15)[0] for i in range(5)]
    sim.run()
    assert sim.sched.preempted_total > 0
    assert all(s.num_output_tokens == 15 for s in seqs)


# ---- chunked prefill ------------------------------------------------------------------------
def test_chunked_prefill_keeps_decodes_flowing() -> None:
    sim = Sim(num_blocks=300, block_size=16, max_num_batched_tokens=64, max_num_seqs=8)
    decoders = [sim.add(list(range(i * 10, i * 10 + 8)), max_tokens=200)[0] for i in range(3)]
    sim.step()
    (long,) = sim.add(list(range(1000, 3000)), max_tokens=4)
    prefill_steps = 0
    while long.num_output_tokens == 0:
        out = sim.step()
        ids = scheduled_ids(out)
        assert all(ids[d.seq_id] == 1 for d in decoders)  # every running decode, every step
        assert ids.get(long.seq_id, 0) <= 64 - 3
        prefill_steps += 1
    assert prefill_steps == -(-2000 // 61)
    sim.run()


def test_long_prefill_threshold_caps_chunks_and_interleaves_prompts() -> None:
    sim = Sim(max_num_batched_tokens=64, max_num_seqs=8, long_prefill_token_threshold=16)
    a = sim.add(40)[0]
    b = sim.add(list(range(100, 140)))[0]
    out = sim.step()
    assert scheduled_ids(out) == {a.seq_id: 16, b.seq_id: 16}
    sim.run()


def test_without_chunked_prefill_prompts_go_whole() -> None:
    sim = Sim(max_num_batched_tokens=64, max_num_seqs=8, enable_chunked_prefill=False, max_model_len=64)
    a = sim.add(40)[0]
    b = sim.add(list(range(100, 140)))[0]
    out = sim.step()
    assert scheduled_ids(out) == {a.seq_id: 40}  # b does not fit the rest of the budget
    out = sim.step()
    assert scheduled_ids(out) == {a.seq_id: 1, b.seq_id: 40}
    sim.run()
    with pytest.raises(ValueError):
        SchedulerConfig(max_model_len=128, max_num_batched_tokens=64, enable_chunked_prefill=False)


# ---- fair share -----------------------------------------------------------------------------
def test_flooding_tenant_cannot_starve_a_steady_one() -> None:
    sim = Sim(num_blocks=1024, max_num_batched_tokens=128, max_num_seqs=4)
    for i in range(50):
        sim.add(list(range(i, i + 16)), max_tokens=8, tenant="flood")
    waits = []
    for round_ in range(5):
        (steady,) = sim.add(list(range(5000 + round_, 5016 + round_)), max_tokens=8, tenant="steady")
        added_at = sim.steps
        while steady.num_computed_tokens == 0 and steady.status is not SequenceStatus.RUNNING:
            sim.step()
        waits.append(sim.steps - added_at)
        while not steady.is_finished:
            sim.step()
    # A slot frees at least every max_tokens (+1 prefill) steps; FIFO would wait ~ 50 / 4 * 9 steps.
    assert max(waits) <= 10, waits
    sim.run()


def test_tenant_weights_are_honoured_roughly_proportionally() -> None:
    sim = Sim(num_blocks=1024, max_num_batched_tokens=256, max_num_seqs=6)
    for i in range(60):
        sim.add(list(range(i, i + 8)), max_tokens=16, tenant="heavy", weight=2.0)
        sim.add(list(range(1000 + i, 1008 + i)), max_tokens=16, tenant="light", weight=1.0)
    for _ in range(150):  # both tenants stay backlogged throughout
        sim.step()
    assert sim.sched.fair_share.num_live("heavy") > 0 and sim.sched.fair_share.num_live("light") > 0
    ratio = sim.served["heavy"] / sim.served["light"]
    assert 1.5 <= ratio <= 2.6, sim.served
    sim.run()


def test_new_or_idle_tenant_starts_at_the_clock_and_banks_no_credit() -> None:
    fair = FairShare()
    fair.activate("a")
    fair.charge("a", 1000, 1.0)
    fair.activate("b")  # new while a is active: starts at a's counter, not at 0
    assert fair.vtime("b") == fair.vtime("a") == 1000
    fair.charge("a", 500, 1.0)
    fair.charge("b", 100, 1.0)
    fair.deactivate("b")  # b goes idle at 1100 while a runs on
    fair.charge("a", 5000, 1.0)
    fair.activate("b")
    assert fair.vtime("b") == 6500  # back at the clock (a's counter), not at its old 1100
    fair.charge("b", 100, 2.0)
    assert fair.vtime("b") == 6550


def test_fair_share_does_not_override_priority() -> None:
    sim = Sim(max_num_batched_tokens=16, max_num_seqs=1)
    sim.add(4, tenant="rich")
    sim.step()
    sim.add(4, tenant="poor")
    (urgent,) = sim.add(4, tenant="rich", priority=Priority.HIGH)
    out = sim.step()
    assert urgent.seq_id in scheduled_ids(out)
    sim.run()


# ---- abort ----------------------------------------------------------------------------------
def _only_blocks_of(sim: Sim, *seqs: Sequence) -> None:
    assert sim.kv.num_used_blocks == len({b for s in seqs for b in s.block_table})


def test_abort_while_waiting() -> None:
    sim = Sim(max_num_seqs=1)
    sim.add(8, max_tokens=10)
    (waiting,) = sim.add(8)
    sim.step()
    assert [s.seq_id for s in sim.sched.abort(waiting.request_id)] == [waiting.seq_id]
    assert waiting.finish_reason is FinishReason.ABORT and waiting.is_finished
    assert sim.sched.num_waiting == 0
    sim.sched.check_integrity()
    assert sim.sched.abort(waiting.request_id) == []  # idempotent
    sim.run()


def test_abort_mid_prefill() -> None:
    sim = Sim(max_num_batched_tokens=32, max_num_seqs=4)
    (other,) = sim.add(4, max_tokens=50)
    (long,) = sim.add(list(range(100, 300)))
    sim.step()
    sim.step()
    assert 0 < long.num_computed_tokens < long.num_prompt_tokens
    out = sim.sched.schedule()  # aborted between schedule and update: the update skips it
    sim.sched.abort(long.request_id)
    _only_blocks_of(sim, other)
    sim.sched.update_after_step(out)
    assert other.num_computed_tokens == other.num_tokens
    other.append_token(1)
    sim.sched.check_integrity()
    sim.run()


def test_abort_while_decoding_and_while_preempted() -> None:
    sim = Sim(max_num_batched_tokens=32, max_num_seqs=2)
    (a,) = sim.add(6, max_tokens=30)
    (b,) = sim.add(6, max_tokens=30)
    sim.step()
    sim.step()
    sim.sched.abort(a.request_id)
    _only_blocks_of(sim, b)
    sim.sched.check_integrity()
    sim.add(6, max_tokens=30)
    sim.step()
    sim.add(6, max_tokens=2, priority=Priority.HIGH)
    out = sim.step()
    (victim,) = out.preempted
    assert victim.is_preempted
    sim.sched.abort(victim.request_id)
    assert victim.is_finished and victim not in sim.sched.waiting
    sim.sched.check_integrity()
    sim.run()


def test_abort_all_returns_pool_to_baseline() -> None:
    sim = Sim(num_blocks=32, max_num_batched_tokens=32, max_num_seqs=4)
    reqs = [sim.add(list(range(i, i + 20)), max_tokens=10, n=2)[0].request_id for i in range(6)]
    for _ in range(5):
        sim.step()
    for rid in reqs:
        sim.sched.abort(rid)
    assert not sim.sched.has_unfinished()
    sim.assert_drained()


# ---- n > 1 and cache salts ------------------------------------------------------------------
def test_n_choices_share_the_prompt_blocks() -> None:
    sim = Sim(block_size=4, max_num_batched_tokens=64, max_num_seqs=8)
    first, *siblings = sim.add(18, max_tokens=5, n=3)
    out = sim.step()
    assert scheduled_ids(out) == {first.seq_id: 18}  # siblings wait for the prompt
    out = sim.step()
    ids = scheduled_ids(out)
    for sib in siblings:
        assert ids[sib.seq_id] == 2  # 16 of 18 prompt tokens from the cache: only the tail
        assert sib.num_cached_tokens == 16
        assert sib.block_table[:4] == first.block_table[:4]
    assert all(sim.kv.pool.blocks[b].ref_count == 3 for b in first.block_table[:4])
    sim.run()
    assert all(s.num_output_tokens == 5 for s in [first, *siblings])


def test_n_choices_without_prefix_caching_compute_separately() -> None:
    sim = Sim(block_size=4, prefix_caching=False, max_num_batched_tokens=64, max_num_seqs=8)
    seqs = sim.add(18, max_tokens=5, n=3)
    out = sim.step()
    assert scheduled_ids(out) == {s.seq_id: 18 for s in seqs}
    sim.run()


def test_cache_salt_isolates_tenants_in_the_scheduler() -> None:
    sim = Sim(block_size=4)
    (a,) = sim.add(20, salt="alice")
    sim.run()
    (b,) = sim.add(20, salt="bob")
    (a2,) = sim.add(20, salt="alice")
    sim.run()
    assert a.num_cached_tokens == 0 and b.num_cached_tokens == 0 and a2.num_cached_tokens == 16


def test_stats_snapshot() -> None:
    sim = Sim(max_num_seqs=1)
    sim.add(8, max_tokens=5)
    sim.add(8, max_tokens=5)
    sim.step()
    stats = sim.sched.stats()
    assert (stats.running, stats.waiting, stats.preempted_total) == (1, 1, 0)
    assert stats.kv_blocks_used == 2 and stats.kv_blocks_total == 256
    assert stats.prefix_cache_queries == 8
    sim.run()


# ---- randomized stress ----------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("prefix_caching", [True, False])
def test_random_workload_keeps_integrity_and_outputs(seed: int, prefix_caching: bool) -> None:
    """Random arrivals, priorities, tenants, n > 1, shared prefixes and aborts on a tight pool:
    integrity after every step, everything ends, and every finished output equals the one a
    roomy engine produces (preemption loses nothing)."""
    import random

    def play(num_blocks: int) -> Sim:
        rng = random.Random(seed)
        sim = Sim(
            num_blocks=num_blocks,
            block_size=4,
            prefix_caching=prefix_caching,
            max_num_batched_tokens=48,
            max_num_seqs=6,
            max_waiting=64,
            long_prefill_token_threshold=rng.choice([0, 16]),
        )
        live: list[str] = []
        for step in range(400):
            if step < 250 and rng.random() < 0.3:
                shared = rng.choice([[], list(range(8)), list(range(12))])
                prompt = shared + [rng.randrange(100, 30_000) for _ in range(rng.randrange(1, 30))]
                kwargs = {
                    "max_tokens": rng.randrange(1, 25),
                    "n": rng.choice([1, 1, 1, 2, 3]),
                    "priority": rng.choice(list(Priority)),
                    "tenant": rng.choice(["a", "b", "c"]),
                    "weight": rng.choice([1.0, 2.0]),
                    "salt": rng.choice(["", "x"]),
                }
                try:
                    live.append(sim.add(prompt, **kwargs)[0].request_id)  # type: ignore[arg-type]
                except CapacityError:
                    pass
            if live and rng.random() < 0.03:
                victim = live.pop(rng.randrange(len(live)))
                sim.sched.abort(victim)
                sim.sched.check_integrity()
            sim.step()
        sim.run(max_steps=5000)
        return sim

    tight = play(num_blocks=18)  # 72 tokens: the largest request (65) fits alone, barely
    roomy = play(num_blocks=256)
    assert tight.sched.preempted_total > 0
    done_both = {(s.request_id, s.index) for s in tight.finished} & {
        (s.request_id, s.index) for s in roomy.finished
    }
    tight_out = {(s.request_id, s.index): s.output_token_ids for s in tight.finished}
    roomy_out = {(s.request_id, s.index): s.output_token_ids for s in roomy.finished}
    assert done_both
    for key in done_both:
        assert tight_out[key] == roomy_out[key]
    for seq in tight.finished + roomy.finished:
        assert seq.num_output_tokens == seq.sampling.max_tokens
