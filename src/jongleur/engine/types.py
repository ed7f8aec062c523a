"""The types that cross the engine's boundary: what a caller submits, what it gets back.

`EngineRequest` goes in (token ids, `SamplingParams`, priority, tenant), a stream of
`EngineOutput` comes out. Nothing here knows about HTTP, API keys or documents.
"""

from __future__ import annotations

import enum
import math
import time
from dataclasses import dataclass, field

from jongleur.engine.errors import InvalidRequestError

MAX_STOP_TOKEN_IDS = 1024
MAX_LOGIT_BIAS_ENTRIES = 1024
MAX_TOP_LOGPROBS = 20
MAX_N = 16


class Priority(enum.IntEnum):
    """Priority classes; a larger value is served first and may preempt smaller ones."""

    LOW = 0
    NORMAL = 1
    HIGH = 2

    @classmethod
    def parse(cls, value: str | int | Priority) -> Priority:
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                raise InvalidRequestError(
                    f"priority must be one of 'low', 'normal', 'high', got {value!r}", param="priority"
                ) from None
        try:
            return cls(int(value))
        except ValueError:
            raise InvalidRequestError(f"priority out of range: {value!r}", param="priority") from None


class FinishReason(str, enum.Enum):
    STOP = "stop"  # an EOS / stop token / stop string
    LENGTH = "length"  # max_tokens or the context window
    ABORT = "abort"  # cancelled by the caller
    ERROR = "error"  # the engine failed this request


@dataclass(frozen=True)
class GuidedDecoding:
    """Constrain the output: `kind` is "json_schema" (spec = the schema as JSON text),
    "json_object" (any JSON object), "regex" or "lark" (a grammar)."""

    kind: str
    spec: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("json_schema", "json_object", "regex", "lark"):
            raise InvalidRequestError(f"unknown guided decoding kind {self.kind!r}", param="response_format")
        if len(self.spec) > 256_000:
            raise InvalidRequestError("the schema or grammar is too large", param="response_format")


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. Validated at construction: invalid values raise `InvalidRequestError`."""

    max_tokens: int = 256
    temperature: float = 1.0
    top_k: int = 0  # 0 = disabled
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    seed: int | None = None
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    min_tokens: int = 0
    logprobs: int | None = None  # None: no logprobs; k >= 0: the chosen token's and k alternatives
    prompt_logprobs: int | None = None  # for echo + logprobs (log-likelihood scoring)
    n: int = 1
    guided: GuidedDecoding | None = None

    def __post_init__(self) -> None:
        def bad(param: str, why: str) -> InvalidRequestError:
            return InvalidRequestError(f"{param} {why}", param=param)

        for name in ("max_tokens", "top_k", "min_tokens", "n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise bad(name, f"must be an integer, got {value!r}")
        if self.max_tokens < 1:
            raise bad("max_tokens", f"must be at least 1, got {self.max_tokens}")
        floats = ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")
        for name in floats:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise bad(name, f"must be a finite number, got {value!r}")
        if not 0.0 <= self.temperature <= 100.0:
            raise bad("temperature", f"must be between 0 and 100, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", f"must be in (0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise bad("min_p", f"must be in [0, 1], got {self.min_p}")
        if self.top_k < 0:
            raise bad("top_k", f"must be 0 (disabled) or positive, got {self.top_k}")
        if not 0.0 < self.repetition_penalty <= 10.0:
            raise bad("repetition_penalty", f"must be in (0, 10], got {self.repetition_penalty}")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                raise bad(name, f"must be between -2 and 2, got {getattr(self, name)}")
        if not 0 <= self.min_tokens <= self.max_tokens:
            raise bad("min_tokens", "must be between 0 and max_tokens")
        if not 1 <= self.n <= MAX_N:
            raise bad("n", f"must be between 1 and {MAX_N}, got {self.n}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise bad("seed", "must be an integer")
        if len(self.logit_bias) > MAX_LOGIT_BIAS_ENTRIES:
            raise bad("logit_bias", f"may hold at most {MAX_LOGIT_BIAS_ENTRIES} entries")
        for token_id, bias in self.logit_bias.items():
            if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
                raise bad("logit_bias", f"keys must be token ids (non-negative integers), got {token_id!r}")
            if isinstance(bias, bool) or not isinstance(bias, int | float) or not math.isfinite(bias):
                raise bad("logit_bias", f"values must be finite numbers, got {bias!r}")
            if not -100.0 <= bias <= 100.0:
                raise bad("logit_bias", f"values must be between -100 and 100, got {bias}")
        if len(self.stop_token_ids) > MAX_STOP_TOKEN_IDS:
            raise bad("stop_token_ids", f"may hold at most {MAX_STOP_TOKEN_IDS} ids")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_TOP_LOGPROBS
            ):
                raise bad(name, f"must be between 0 and {MAX_TOP_LOGPROBS}, got {value!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def check_vocab(self, vocab_size: int) -> None:
        """Reject token ids the model does not have, before the request reaches a batch."""
        for token_id in self.logit_bias:
            if token_id >= vocab_size:
                raise InvalidRequestError(
                    f"logit_bias names token id {token_id}, outside the vocabulary (size {vocab_size})",
                    param="logit_bias",
                )
        for token_id in self.stop_token_ids:
            if not 0 <= token_id < vocab_size:
                raise InvalidRequestError(
                    f"stop token id {token_id} is outside the vocabulary (size {vocab_size})",
                    param="stop_token_ids",
                )


@dataclass
class EngineRequest:
    """One generation request, already tokenized. `n > 1` shares the prompt's KV blocks."""

    request_id: str
    prompt_token_ids: list[int]
    sampling: SamplingParams
    priority: Priority = Priority.NORMAL
    tenant: str = "default"
    tenant_weight: float = 1.0  # fair-share weight: a tenant with weight 2 gets twice the tokens
    cache_salt: str = ""  # isolates prefix-cache entries (per tenant) so tenants cannot probe each other
    arrival_time: float = field(default_factory=time.monotonic)
    deadline: float | None = None  # monotonic time after which the request is aborted


@dataclass(frozen=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()  # (token id, logprob) alternatives, best first


@dataclass
class EngineOutput:
    """New tokens for one sequence of one request since the last output.

    `index` is the choice index (0 .. n-1). `finish_reason` is set on the final output of that
    choice; after it no more outputs come for that index.
    """

    request_id: str
    index: int
    new_token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    prompt_logprobs: list[TokenLogprob | None] | None = None  # first output only, when asked
    finish_reason: FinishReason | None = None
    stop_token_id: int | None = None  # the token that ended the sequence (not part of new_token_ids)
    num_prompt_tokens: int = 0
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache
    error: str | None = None  # set with FinishReason.ERROR

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine for metrics and health."""

    running: int = 0
    waiting: int = 0
    preempted_total: int = 0
    kv_blocks_total: int = 0
    kv_blocks_used: int = 0
    prefix_cache_queries: int = 0  # prompt tokens looked up in the prefix cache
    prefix_cache_hits: int = 0  # of which found
    steps_total: int = 0
    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    last_step_tokens: int = 0

    @property
    def kv_usage(self) -> float:
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total else 0.0

    @property
    def prefix_cache_hit_rate(self) -> float:
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else 0.0
