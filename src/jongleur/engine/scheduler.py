"""The scheduler: which sequences run in the next step, and how many tokens each computes.

One step's token budget is shared by running decodes (1 token each, served first, every step)
and prefills, which are chunked so a long prompt never stalls the running streams. Prefills
(in-progress ones and waiting requests) are ordered by priority class, then running before
waiting, then per-tenant fair share (`FairShare`), then arrival.

Preemption is by recompute: the victim's blocks are freed, `num_computed_tokens` goes to 0,
its output tokens are kept, and on resume it re-prefills prompt + outputs (the prefix cache
usually gives most of it back). Victims are the lowest-priority, then latest-arrived, running
sequences: when blocks run out for a running sequence (possibly the sequence itself), or when
a strictly higher-priority request waits and the batch or the blocks are full.

Choices of one request (n > 1) share the prompt's blocks: the later choices wait until the
first choice's prompt is computed, then hit the prefix cache for every full prompt block.
"""

from __future__ import annotations

import math
from collections.abc import Sequence as SequenceLike
from dataclasses import dataclass, field

from jongleur.engine.errors import CapacityError, InvalidRequestError, RequestTooLargeError
from jongleur.engine.fair_share import FairShare
from jongleur.engine.kv_cache import KVCacheManager
from jongleur.engine.sequence import Sequence, SequenceStatus
from jongleur.engine.types import FinishReason


class SchedulerIntegrityError(AssertionError):
    """The scheduler's queues disagree with its sequences' states (a bug, not bad input)."""


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    max_model_len: int  # the context window: prompt + max_tokens must fit it
    max_num_batched_tokens: int = 512  # token budget of one step (decodes + prefill chunks)
    max_num_seqs: int = 32  # running sequences at most
    max_waiting: int = 256  # waiting sequences at most; beyond, `add` raises CapacityError
    enable_chunked_prefill: bool = True
    # Largest prefill chunk one sequence gets in a step (0: up to the whole budget). Lower it to
    # let several prompts progress side by side.
    long_prefill_token_threshold: int = 0
    capacity_retry_after_s: float = 1.0  # the Retry-After hint of CapacityError

    def __post_init__(self) -> None:
        for name in ("max_model_len", "max_num_batched_tokens", "max_num_seqs", "max_waiting"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.long_prefill_token_threshold < 0:
            raise ValueError("long_prefill_token_threshold must be 0 (off) or positive")
        if self.max_num_batched_tokens < self.max_num_seqs:
            raise ValueError(
                "max_num_batched_tokens must be at least max_num_seqs (every decode runs each step)"
            )
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError("without chunked prefill, max_num_batched_tokens must be at least max_model_len")


@dataclass
class ScheduledSequence:
    seq: Sequence
    num_new_tokens: int  # compute tokens [seq.num_computed_tokens, + num_new_tokens)


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSequence] = field(default_factory=list)  # decodes and prefill chunks
    preempted: list[Sequence] = field(default_factory=list)  # their blocks are already freed
    num_batched_tokens: int = 0


@dataclass(frozen=True)
class SchedulerStats:
    running: int
    waiting: int
    preempted_total: int
    kv_blocks_total: int
    kv_blocks_used: int
    prefix_cache_queries: int
    prefix_cache_hits: int


@dataclass
class _StepPlan:
    budget: int
    items: dict[int, ScheduledSequence] = field(default_factory=dict)  # seq_id -> item, in order
    preempted: list[Sequence] = field(default_factory=list)
    admit: bool = True  # no new admissions once blocks ran out for a running sequence


def _victim_key(seq: Sequence) -> tuple[int, float, int]:
    """Smallest = preempted first: lowest priority, then latest arrival."""
    return (int(seq.priority), -seq.arrival_time, -seq.seq_id)


class Scheduler:
    def __init__(self, config: SchedulerConfig, kv: KVCacheManager) -> None:
        self.config = config
        self.kv = kv
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.fair_share = FairShare()
        self.preempted_total = 0
        self._requests: dict[str, list[Sequence]] = {}  # request id -> its unfinished sequences
        self._prefilled: set[str] = set()  # requests whose first choice's prompt is computed

    # ---- admission ------------------------------------------------------------------------
    def add(self, seqs: list[Sequence]) -> None:
        """Queue one request's sequences, or raise if it can never fit / the queue is full."""
        if not seqs:
            return
        request_id = seqs[0].request_id
        if any(s.request_id != request_id for s in seqs):
            raise InvalidRequestError("add() takes the sequences of one request", param="request_id")
        if request_id in self._requests:
            raise InvalidRequestError(f"duplicate request id {request_id!r}", param="request_id")
        for seq in seqs:
            if seq.num_prompt_tokens == 0:
                raise InvalidRequestError("the prompt is empty", param="prompt")
            if not (math.isfinite(seq.tenant_weight) and seq.tenant_weight > 0):
                raise InvalidRequestError("tenant_weight must be a positive number", param="tenant_weight")
            total = seq.num_tokens + seq.sampling.max_tokens
            if total > self.config.max_model_len:
                raise RequestTooLargeError(
                    f"the prompt ({seq.num_tokens} tokens) plus max_tokens ({seq.sampling.max_tokens}) "
                    f"exceeds the context window of {self.config.max_model_len} tokens"
                )
            # The last sampled token is never fed back, so it needs no KV.
            if self.kv.blocks_needed(total - 1) > self.kv.num_blocks:
                raise RequestTooLargeError(
                    f"the prompt plus max_tokens ({total} tokens) can never fit this engine's KV cache "
                    f"({self.kv.num_blocks * self.kv.block_size} tokens); lower max_tokens or shorten the prompt"
                )
        if len(self.waiting) + len(seqs) > self.config.max_waiting:
            raise CapacityError(
                f"the engine's queue is full ({len(self.waiting)} waiting)",
                retry_after_s=self.config.capacity_retry_after_s,
            )
        for seq in seqs:
            seq.status = SequenceStatus.WAITING
            self.fair_share.activate(seq.tenant)
            self.waiting.append(seq)
        self._requests[request_id] = list(seqs)

    # ---- the step -------------------------------------------------------------------------
    def schedule(self) -> SchedulerOutput:
        plan = _StepPlan(budget=self.config.max_num_batched_tokens)
        by_rank = sorted(self.running, key=lambda s: (-s.priority, s.arrival_time, s.seq_id))
        for seq in by_rank:  # decodes first: every running stream moves every step
            if seq.status is not SequenceStatus.RUNNING or seq.num_pending_tokens != 1 or plan.budget == 0:
                continue
            if self._allocate_or_preempt(seq, 1, plan):
                self._add_to_plan(seq, 1, plan)
        self._schedule_prefills(plan)
        scheduled = list(plan.items.values())
        return SchedulerOutput(
            scheduled=scheduled,
            preempted=plan.preempted,
            num_batched_tokens=sum(item.num_new_tokens for item in scheduled),
        )

    def _schedule_prefills(self, plan: _StepPlan) -> None:
        candidates = [s for s in self.running if s.num_pending_tokens > 1]
        if plan.admit:
            candidates += [s for s in self.waiting if self._eligible(s)]
        while candidates and plan.budget > 0:
            seq = min(candidates, key=self._prefill_key)
            candidates.remove(seq)
            if seq.status is SequenceStatus.RUNNING:
                n = self._chunk(seq.num_pending_tokens, plan.budget)
                if n and self._allocate_or_preempt(seq, n, plan):
                    self._add_to_plan(seq, n, plan)
            elif plan.admit and seq not in plan.preempted and not self._admit(seq, plan):
                plan.admit = False
            if not plan.admit:
                candidates = [s for s in candidates if s.status is SequenceStatus.RUNNING]

    def _prefill_key(self, seq: Sequence) -> tuple[int, int, float, float, int]:
        waiting = 0 if seq.status is SequenceStatus.RUNNING else 1
        return (-seq.priority, waiting, self.fair_share.vtime(seq.tenant), seq.arrival_time, seq.seq_id)

    def _eligible(self, seq: Sequence) -> bool:
        """Later choices of a request wait for the first choice's prompt, to share its blocks."""
        if seq.index == 0 or not self.kv.enable_prefix_caching or seq.request_id in self._prefilled:
            return True
        return not any(s.index == 0 for s in self._requests.get(seq.request_id, ()))

    def _chunk(self, pending: int, budget: int) -> int:
        """Tokens of a prefill to compute this step (0: it does not fit)."""
        if not self.config.enable_chunked_prefill:
            return pending if pending <= budget else 0
        limit = self.config.long_prefill_token_threshold or budget
        return min(pending, budget, limit)

    def _admit(self, seq: Sequence, plan: _StepPlan) -> bool:
        """Start a waiting sequence, preempting strictly lower-priority ones if needed."""
        while True:
            n = self._chunk(seq.num_tokens - self.kv.lookup_prefix(seq), plan.budget)
            if n == 0:
                return False
            if len(self.running) < self.config.max_num_seqs and self.kv.allocate_for(seq, n):
                break
            lower = [s for s in self.running if s.priority < seq.priority]
            if not lower:
                return False
            self._preempt(min(lower, key=_victim_key), plan)
        self.waiting.remove(seq)
        seq.status = SequenceStatus.RUNNING
        self.running.append(seq)
        self._add_to_plan(seq, n, plan)
        return True

    def _allocate_or_preempt(self, seq: Sequence, num_new_tokens: int, plan: _StepPlan) -> bool:
        """Blocks for a running sequence's next tokens, preempting the lowest/latest (maybe itself)."""
        while not self.kv.allocate_for(seq, num_new_tokens):
            plan.admit = False
            victim = min(self.running, key=_victim_key)
            self._preempt(victim, plan)
            if victim is seq:
                return False
        return True

    def _add_to_plan(self, seq: Sequence, n: int, plan: _StepPlan) -> None:
        plan.items[seq.seq_id] = ScheduledSequence(seq, n)
        plan.budget -= n
        self.fair_share.charge(seq.tenant, n, seq.tenant_weight)

    def _preempt(self, seq: Sequence, plan: _StepPlan) -> None:
        item = plan.items.pop(seq.seq_id, None)
        if item is not None:  # scheduled earlier in this step: give its tokens back
            plan.budget += item.num_new_tokens
            self.fair_share.charge(seq.tenant, -item.num_new_tokens, seq.tenant_weight)
        self.running.remove(seq)
        self.kv.free(seq)
        seq.status = SequenceStatus.WAITING
        seq.num_preemptions += 1
        self.preempted_total += 1
        self.waiting.append(seq)
        plan.preempted.append(seq)

    def update_after_step(self, output: SchedulerOutput) -> None:
        """The step ran: its tokens' KV is computed; full blocks become hittable."""
        for item in output.scheduled:
            seq = item.seq
            if seq.status is not SequenceStatus.RUNNING:  # aborted since schedule()
                continue
            seq.num_computed_tokens += item.num_new_tokens
            if seq.num_computed_tokens > seq.num_tokens:
                raise SchedulerIntegrityError(f"sequence {seq.seq_id} computed past its known tokens")
            self.kv.commit_computed(seq)
            if seq.index == 0 and seq.num_computed_tokens >= seq.num_prompt_tokens:
                self._prefilled.add(seq.request_id)

    # ---- endings --------------------------------------------------------------------------
    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """End a sequence (stop, length, error): free its blocks and forget it."""
        if seq.is_finished:
            return
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        self.kv.free(seq)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
        self.fair_share.deactivate(seq.tenant)
        siblings = self._requests[seq.request_id]
        siblings.remove(seq)
        if not siblings:
            del self._requests[seq.request_id]
            self._prefilled.discard(seq.request_id)

    def abort(self, request_id: str) -> list[Sequence]:
        """End every unfinished sequence of a request, at whatever stage; blocks are freed at once."""
        seqs = list(self._requests.get(request_id, ()))
        for seq in seqs:
            self.finish(seq, FinishReason.ABORT)
        return seqs

    # ---- introspection --------------------------------------------------------------------
    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def stats(self) -> SchedulerStats:
        return SchedulerStats(
            running=len(self.running),
            waiting=len(self.waiting),
            preempted_total=self.preempted_total,
            kv_blocks_total=self.kv.num_blocks,
            kv_blocks_used=self.kv.num_used_blocks,
            prefix_cache_queries=self.kv.stats.queries,
            prefix_cache_hits=self.kv.stats.hits,
        )

    def check_integrity(self) -> None:
        """Raise unless queues, sequence states and the KV pool all agree."""
        _check_queue(self.running, SequenceStatus.RUNNING)
        _check_queue(self.waiting, SequenceStatus.WAITING)
        live = self.running + self.waiting
        if len({id(s) for s in live}) != len(live):
            raise SchedulerIntegrityError("a sequence is queued twice")
        if len(self.running) > self.config.max_num_seqs:
            raise SchedulerIntegrityError(f"{len(self.running)} running > max_num_seqs")
        by_request = sorted(s.seq_id for seqs in self._requests.values() for s in seqs)
        if by_request != sorted(s.seq_id for s in live):
            raise SchedulerIntegrityError("the request index disagrees with the queues")
        tenants: dict[str, int] = {}
        for seq in live:
            tenants[seq.tenant] = tenants.get(seq.tenant, 0) + 1
        if tenants != self.fair_share.live_tenants:
            raise SchedulerIntegrityError("fair-share counters disagree with the queues")
        self.kv.check_integrity(live)


def _check_queue(queue: SequenceLike[Sequence], status: SequenceStatus) -> None:
    for seq in queue:
        if seq.status is not status:
            raise SchedulerIntegrityError(
                f"sequence {seq.seq_id} is {seq.status} in the {status.value} queue"
            )
        if status is SequenceStatus.WAITING and (seq.block_table or seq.num_computed_tokens):
            raise SchedulerIntegrityError(f"waiting sequence {seq.seq_id} holds blocks")
