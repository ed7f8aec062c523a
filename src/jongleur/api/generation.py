"""From a validated request to engine outputs and back to text: shared by every generating route.

- `build_sampling`: API fields -> `SamplingParams` (400s name the parameter).
- `resolve_max_tokens`: the context-window policy. A prompt that fills the window is refused
  with 400 `context_length_exceeded` before anything reaches the engine; an explicit
  `max_tokens` that does not fit is refused too; the default is capped to what remains.
- `Generation`: runs one `EngineRequest`, yields per-choice text deltas with stop strings
  applied, and always closes the engine stream (which aborts the request in the engine).
- `until_disconnect`: runs a coroutine, cancelling it when the HTTP client goes away.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import Request

from jongleur.api.errors import APIError, bad_request
from jongleur.api.metrics import Metrics
from jongleur.api.openai.common import MAX_STOP_STRING_CHARS, MAX_STOP_STRINGS, SamplingFields
from jongleur.api.security import Principal
from jongleur.api.tokenization import ModelText
from jongleur.auth import hooks
from jongleur.catalog.served import ServedModel
from jongleur.engine.errors import ContextLengthExceededError, EngineError
from jongleur.engine.types import (
    EngineOutput,
    EngineRequest,
    FinishReason,
    GuidedDecoding,
    Priority,
    SamplingParams,
    TokenLogprob,
)
from jongleur.tokenizer import IncrementalDetokenizer, StopAutomaton

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The HTTP client went away; the work was cancelled."""


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def stop_list(stop: str | list[str] | None, param: str = "stop") -> list[str]:
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    if len(stops) > MAX_STOP_STRINGS:
        raise bad_request(f"{param} may hold at most {MAX_STOP_STRINGS} strings", param=param)
    for s in stops:
        if len(s) > MAX_STOP_STRING_CHARS:
            raise bad_request(f"each {param} string may be at most {MAX_STOP_STRING_CHARS} characters", param=param)
    return [s for s in stops if s]


def parse_logit_bias(bias: dict[str, float] | None) -> dict[int, float]:
    out: dict[int, float] = {}
    for key, value in (bias or {}).items():
        try:
            token_id = int(key)
        except ValueError:
            raise bad_request(f"logit_bias keys must be token ids, got {key!r}", param="logit_bias") from None
        out[token_id] = value
    return out


def resolve_priority(value: str | int | None, principal: Principal) -> Priority:
    if value is None:  # the key's own class; a request may lower it, never raise it (clamped)
        return principal.max_priority
    if isinstance(value, int) and not isinstance(value, bool) and value not in (0, 1, 2):
        raise bad_request("priority must be 'low', 'normal' or 'high'", param="priority")
    return min(Priority.parse(value), principal.max_priority)


def resolve_max_tokens(
    requested: int | None, prompt_len: int, window: int, default: int, *, prompt_param: str, max_param: str
) -> int:
    if window and prompt_len >= window:
        raise ContextLengthExceededError(
            f"this model's context window is {window} tokens; the prompt has {prompt_len} tokens",
            param=prompt_param,
        )
    remaining = window - prompt_len if window else default
    if requested is None:
        return max(1, min(default, remaining))
    if window and requested > remaining:
        raise ContextLengthExceededError(
            f"this model's context window is {window} tokens; the prompt has {prompt_len} tokens and "
            f"{requested} were requested to generate (at most {remaining} fit)",
            param=max_param,
        )
    return requested


def build_sampling(
    req: SamplingFields,
    *,
    max_tokens: int,
    vocab_size: int,
    logprobs: int | None = None,
    prompt_logprobs: int | None = None,
    guided: GuidedDecoding | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> SamplingParams:
    """A field the request leaves unset takes `defaults` (the model's manifest), then ours."""
    model_defaults = defaults or {}

    def pick(name: str, fallback: Any) -> Any:
        value = getattr(req, name)
        return model_defaults.get(name, fallback) if value is None else value

    top_k = pick("top_k", 0)
    params = SamplingParams(
        max_tokens=max_tokens,
        temperature=float(pick("temperature", 1.0)),
        top_k=0 if top_k == -1 else top_k,
        top_p=float(pick("top_p", 1.0)),
        min_p=float(pick("min_p", 0.0)),
        repetition_penalty=float(pick("repetition_penalty", 1.0)),
        presence_penalty=float(pick("presence_penalty", 0.0)),
        frequency_penalty=float(pick("frequency_penalty", 0.0)),
        logit_bias=parse_logit_bias(req.logit_bias),
        seed=req.seed,
        stop_token_ids=tuple(req.stop_token_ids or ()),
        ignore_eos=req.ignore_eos,
        min_tokens=min(req.min_tokens, max_tokens),
        logprobs=logprobs,
        prompt_logprobs=prompt_logprobs,
        n=req.n,
        guided=guided,
    )
    if vocab_size:
        params.check_vocab(vocab_size)
    return params


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await `work`; if the client disconnects first, cancel it and raise `ClientDisconnected`."""
    main = asyncio.ensure_future(work)

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    watcher = asyncio.ensure_future(watch())
    try:
        await asyncio.wait({main, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        main.cancel()
        watcher.cancel()
        raise
    if main.done():
        watcher.cancel()
        return main.result()
    main.cancel()
    await asyncio.gather(main, return_exceptions=True)
    raise ClientDisconnected()


@dataclass
class ChoiceDelta:
    index: int
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: str | None = None


@dataclass
class ChoiceResult:
    index: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None


_FINISH = {FinishReason.STOP: "stop", FinishReason.LENGTH: "length", FinishReason.ABORT: "abort"}


class Generation:
    """One engine request: `await start()` (admission errors raise here), then `deltas()`."""

    def __init__(
        self,
        served: ServedModel,
        text: ModelText,
        request: EngineRequest,
        stop: Sequence[str],
        metrics: Metrics,
        skip_special_tokens: bool = True,
    ) -> None:
        assert served.engine is not None
        self.served = served
        # the key's limits: max input/output tokens, TPM and quota reservation (raise 400/429 here)
        n = request.sampling.n
        capped = hooks.admit(served.name, len(request.prompt_token_ids), request.sampling.max_tokens, n)
        if capped != request.sampling.max_tokens:
            request.sampling = dataclasses.replace(request.sampling, max_tokens=capped,
                                                   min_tokens=min(request.sampling.min_tokens, capped))
        self._guards = [hooks.output_guard() for _ in range(n)]
        self.request = request
        self.metrics = metrics
        self.prompt_tokens = len(request.prompt_token_ids)
        self.cached_tokens = 0
        self.completion_tokens = 0
        self.prompt_logprobs: list[TokenLogprob | None] | None = None
        stops = StopAutomaton(stop)  # validated and built once, shared by the choices
        self._streams = [
            IncrementalDetokenizer(text, prompt_ids=request.prompt_token_ids,
                                   skip_special_tokens=skip_special_tokens, stop=stops)
            for _ in range(request.sampling.n)
        ]
        self._done = [False] * request.sampling.n
        self._gen = served.engine.generate(request)
        self._first: EngineOutput | None = None
        self._started = time.monotonic()
        self._first_token_at: float | None = None

    async def start(self) -> None:
        try:
            self._first = await self._gen.__anext__()
        except BaseException:
            await self._gen.aclose()
            raise
        self._mark_first()

    def _mark_first(self) -> None:
        if self._first_token_at is None:
            self._first_token_at = time.monotonic()
            self.metrics.ttft.labels(self.served.name).observe(self._first_token_at - self._started)

    async def close(self) -> None:
        await self._gen.aclose()

    async def deltas(self) -> AsyncIterator[ChoiceDelta]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                for delta in self._handle(first):
                    yield delta
            if not all(self._done):
                async for out in self._gen:
                    for delta in self._handle(out):
                        yield delta
                    if all(self._done):
                        break
        finally:
            await self._gen.aclose()  # aborts the engine request if it is still running
            self._record()

    def _handle(self, out: EngineOutput) -> list[ChoiceDelta]:
        if out.prompt_logprobs is not None and self.prompt_logprobs is None:
            self.prompt_logprobs = out.prompt_logprobs
        self.cached_tokens = max(self.cached_tokens, out.num_cached_tokens)
        i = out.index
        if i >= len(self._done) or self._done[i]:
            return []
        if out.finish_reason is FinishReason.ERROR:
            raise EngineError(out.error or "generation failed")
        stream = self._streams[i]
        self.completion_tokens += len(out.new_token_ids)
        delta = stream.add(out.new_token_ids)
        text = delta.text
        finish: str | None = None
        if delta.finished:
            finish = "stop"
        elif out.finished:
            text += stream.finish().text
            finish = _FINISH.get(out.finish_reason, "stop") if out.finish_reason else "stop"
        guard = self._guards[i]
        if guard is not None:  # output guardrails; they hold back a tail until it is safe
            text = guard.push(text)
            if finish is not None:
                text += guard.finish()
                hooks.record_output_findings(guard)
        if finish is not None:
            self._done[i] = True
        if not text and finish is None and not out.logprobs:
            return []
        return [ChoiceDelta(i, text, list(out.new_token_ids), out.logprobs, finish)]

    def _record(self) -> None:
        name = self.served.name
        hooks.add_tokens(self.prompt_tokens, self.completion_tokens)
        self.metrics.prompt_tokens.labels(name).inc(self.prompt_tokens)
        self.metrics.generation_tokens.labels(name).inc(self.completion_tokens)
        if self._first_token_at is not None and self.completion_tokens > 1:
            per_token = (time.monotonic() - self._first_token_at) / (self.completion_tokens - 1)
            self.metrics.tpot.labels(name).observe(per_token)

    async def collect(self) -> list[ChoiceResult]:
        results = [ChoiceResult(index=i) for i in range(self.request.sampling.n)]
        async for delta in self.deltas():
            r = results[delta.index]
            r.text += delta.text
            r.token_ids.extend(delta.token_ids)
            if delta.logprobs:
                r.logprobs.extend(delta.logprobs)
            if delta.finish_reason is not None:
                r.finish_reason = delta.finish_reason
        for r in results:
            self.metrics.finished.labels(self.served.name, r.finish_reason or "abort").inc()
        return results


def make_engine_request(
    request_id: str, prompt_ids: list[int], sampling: SamplingParams, priority: Priority, principal: Principal
) -> EngineRequest:
    if not prompt_ids:
        raise bad_request("the prompt is empty", param="prompt")
    return EngineRequest(
        request_id=request_id,
        prompt_token_ids=prompt_ids,
        sampling=sampling,
        priority=min(priority, principal.max_priority),
        tenant=principal.tenant,
        tenant_weight=principal.weight,
        cache_salt=principal.tenant,
    )


def require_engine(served: ServedModel) -> None:
    if served.engine is None or not served.engine.is_alive():
        raise APIError(503, f"the model {served.name!r} is not running", code="engine_unavailable",
                       headers={"Retry-After": "5"})
