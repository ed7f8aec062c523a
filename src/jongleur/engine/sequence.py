"""`Sequence`: the state of one choice of one request, from admission to its final token.

One object goes from the scheduler to the runner and back: the scheduler owns its status and
block table (through the KV cache manager), the runner reads its tokens and block table, the
engine core appends sampled tokens and finishes it.
"""

from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

from jongleur.engine.types import EngineRequest, FinishReason, Priority, SamplingParams

_seq_ids = itertools.count()


class SequenceStatus(enum.Enum):
    WAITING = "waiting"  # not admitted yet, or preempted (then `num_preemptions > 0`)
    RUNNING = "running"  # holds KV blocks; scheduled every step while the budget allows
    FINISHED = "finished"  # done, aborted or failed; holds no blocks


@dataclass(eq=False)  # identity semantics: two sequences are never "equal" by value
class Sequence:
    seq_id: int
    request_id: str
    index: int  # choice index within the request (n > 1)
    prompt_token_ids: list[int]
    # Appended to in place, never replaced: samplers may hold a reference to this list.
    output_token_ids: list[int] = field(default_factory=list)
    sampling: SamplingParams = field(default_factory=SamplingParams)
    priority: Priority = Priority.NORMAL
    tenant: str = "default"
    tenant_weight: float = 1.0
    cache_salt: str = ""
    arrival_time: float = 0.0
    status: SequenceStatus = SequenceStatus.WAITING
    num_computed_tokens: int = 0  # tokens whose KV is in the cache
    block_table: list[int] = field(default_factory=list)
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache at first admission
    num_preemptions: int = 0
    finish_reason: FinishReason | None = None
    # Chained hashes of the full blocks of `all_token_ids`, filled lazily by the KV cache manager.
    # Tokens are only ever appended, so they stay valid across preemption.
    block_hashes: list[bytes] = field(default_factory=list, repr=False)

    @property
    def all_token_ids(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.output_token_ids)

    @property
    def num_pending_tokens(self) -> int:
        """Known tokens whose KV is not computed yet (1 for a decode)."""
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def is_preempted(self) -> bool:
        return self.status is SequenceStatus.WAITING and self.num_preemptions > 0

    def token_range(self, start: int, stop: int) -> list[int]:
        """Tokens `[start, stop)` of prompt + output, without building the whole list."""
        n_prompt = len(self.prompt_token_ids)
        if stop <= n_prompt:
            return self.prompt_token_ids[start:stop]
        if start >= n_prompt:
            return self.output_token_ids[start - n_prompt : stop - n_prompt]
        return self.prompt_token_ids[start:] + self.output_token_ids[: stop - n_prompt]

    def append_token(self, token_id: int) -> None:
        self.output_token_ids.append(token_id)


def sequences_from_request(request: EngineRequest, sampling: SamplingParams | None = None) -> list[Sequence]:
    """One `Sequence` per choice (`n`) of a request, with fresh sequence ids."""
    params = sampling or request.sampling
    return [
        Sequence(
            seq_id=next(_seq_ids),
            request_id=request.request_id,
            index=index,
            prompt_token_ids=list(request.prompt_token_ids),
            sampling=params,
            priority=request.priority,
            tenant=request.tenant,
            tenant_weight=request.tenant_weight,
            cache_salt=request.cache_salt,
            arrival_time=request.arrival_time,
        )
        for index in range(params.n)
    ]
