"""`POST /v1/completions`: raw prompts (texts or token ids) -> engine -> text, with echo + logprobs.

Each prompt of a list is one engine request; choice `i * n + j` is prompt i's choice j. Several
prompts run concurrently when not streaming and one after the other when streaming.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from jongleur.api.errors import bad_request, error_payload, from_exception
from jongleur.api.generation import (
    ClientDisconnected,
    Generation,
    build_sampling,
    make_engine_request,
    new_id,
    require_engine,
    resolve_max_tokens,
    resolve_priority,
    stop_list,
    until_disconnect,
)
from jongleur.api.openai.common import ContextInfo, Usage
from jongleur.api.openai.completions_protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    CompletionResponse,
)
from jongleur.api.security import Principal
from jongleur.api.sse import DONE, sse, sse_event
from jongleur.api.tokenization import ModelText
from jongleur.engine.types import TokenLogprob

MAX_PROMPTS = 64


def prompt_list(req: CompletionRequest, text: ModelText) -> list[tuple[list[int], str | None]]:
    """(token ids, original text or None) for every prompt of the request."""
    p = req.prompt
    items: list[tuple[list[int], str | None]]
    if isinstance(p, str):
        items = [(text.encode(p, add_special_tokens=True), p)]
    elif not p:
        raise bad_request("prompt is empty", param="prompt")
    elif all(isinstance(x, str) for x in p):
        items = [(text.encode(x, add_special_tokens=True), x) for x in p]  # type: ignore[arg-type]
    elif all(isinstance(x, int) for x in p):
        items = [(list(p), None)]  # type: ignore[arg-type]
    else:
        items = [(list(x), None) for x in p]  # type: ignore[arg-type]
    if len(items) > MAX_PROMPTS:
        raise bad_request(f"at most {MAX_PROMPTS} prompts per request", param="prompt")
    for ids, _ in items:
        if not ids:
            raise bad_request("prompt is empty", param="prompt")
        text.check_prompt_ids(ids, "prompt")
    return items


class LogprobBuilder:
    """The legacy completions `logprobs` object, built token by token."""

    def __init__(self, text: ModelText, offset: int = 0) -> None:
        self.text = text
        self.out = CompletionLogprobs()
        self.offset = offset

    def add(self, token_id: int, lp: TokenLogprob | None) -> None:
        tok = self.text.token_text(token_id)
        self.out.tokens.append(tok)
        self.out.text_offset.append(self.offset)
        self.offset += len(tok)
        if lp is None:
            self.out.token_logprobs.append(None)
            self.out.top_logprobs.append(None)
        else:
            self.out.token_logprobs.append(max(lp.logprob, -9999.0))
            tops = {self.text.token_text(i): max(v, -9999.0) for i, v in lp.top}
            tops.setdefault(tok, max(lp.logprob, -9999.0))
            self.out.top_logprobs.append(tops)


async def create_completion(request: Request, req: CompletionRequest, principal: Principal) -> Response:
    state = request.app.state
    served = await state.registry.aresolve(req.model, "chat")
    require_engine(served)
    text = ModelText(served)
    if req.best_of is not None and req.best_of != req.n:
        raise bad_request("best_of is not supported (other than equal to n)", param="best_of")
    if req.suffix:
        raise bad_request("suffix is not supported", param="suffix")
    prompts = prompt_list(req, text)
    window = text.window
    stops = stop_list(req.stop)
    priority = resolve_priority(req.priority, principal)
    rid = new_id("cmpl")
    gens: list[Generation] = []
    for k, (ids, _) in enumerate(prompts):
        max_tokens = resolve_max_tokens(req.max_tokens, len(ids), window, state.settings.default_max_tokens,
                                        prompt_param="prompt", max_param="max_tokens")
        sampling = build_sampling(
            req, max_tokens=max_tokens, vocab_size=text.vocab_size, logprobs=req.logprobs,
            prompt_logprobs=req.logprobs if (req.echo and req.logprobs is not None) else None,
            defaults=served.default_sampling,
        )
        engine_req = make_engine_request(f"{rid}-{k}", ids, sampling, priority, principal)
        gens.append(Generation(served, text, engine_req, stops, state.metrics, req.skip_special_tokens))
    created = int(time.time())
    if req.stream:
        return sse(_stream(req, gens, prompts, text, rid, created, served.name, window))
    try:
        all_results = await until_disconnect(request, _run_all(gens))
    except ClientDisconnected:
        return Response(status_code=499)
    choices = []
    for k, (gen, results) in enumerate(zip(gens, all_results)):
        ids, original = prompts[k]
        prompt_text = original if original is not None else text.decode(ids)
        for r in results:
            lp = None
            if req.logprobs is not None:
                builder = LogprobBuilder(text)
                if req.echo:
                    plps = gen.prompt_logprobs or [None] * len(ids)
                    for tid, plp in zip(ids, plps):
                        builder.add(tid, plp)
                for tid, glp in zip(r.token_ids, r.logprobs or [None] * len(r.token_ids)):
                    builder.add(tid, glp)
                lp = builder.out
            body = (prompt_text + r.text) if req.echo else r.text
            choices.append(CompletionChoice(index=k * req.n + r.index, text=body, logprobs=lp,
                                            finish_reason=r.finish_reason))
    prompt_tokens = sum(g.prompt_tokens for g in gens)
    completion_tokens = sum(g.completion_tokens for g in gens)
    longest = max(len(ids) for ids, _ in prompts)
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                  total_tokens=prompt_tokens + completion_tokens)
    body = CompletionResponse(
        id=rid, created=created, model=served.name, choices=choices, usage=usage,
        context=ContextInfo(prompt_tokens=longest, window=window, remaining=max(0, window - longest)),
    )
    return JSONResponse(body.model_dump(mode="json"))


async def _run_all(gens: list[Generation]) -> list[Any]:
    async def one(gen: Generation) -> Any:
        await gen.start()
        return await gen.collect()

    tasks = [asyncio.ensure_future(one(g)) for g in gens]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _stream(
    req: CompletionRequest, gens: list[Generation], prompts: list[tuple[list[int], str | None]],
    text: ModelText, rid: str, created: int, model: str, window: int,
) -> AsyncIterator[bytes]:
    base = {"id": rid, "object": "text_completion", "created": created, "model": model}
    include_usage = bool(req.stream_options and req.stream_options.include_usage)

    def chunk(index: int, body: str, finish: str | None, lp: Any = None) -> bytes:
        return sse_event({**base, "choices": [
            {"index": index, "text": body, "logprobs": lp, "finish_reason": finish}]})

    try:
        for k, gen in enumerate(gens):
            await gen.start()
            if req.echo:
                ids, original = prompts[k]
                for j in range(req.n):
                    yield chunk(k * req.n + j, original if original is not None else text.decode(ids), None)
            async for d in gen.deltas():
                lp = None
                if req.logprobs is not None and d.logprobs:
                    builder = LogprobBuilder(text)
                    for tid, glp in zip(d.token_ids, d.logprobs):
                        builder.add(tid, glp)
                    lp = builder.out.model_dump(mode="json")
                if d.text or d.finish_reason or lp:
                    yield chunk(k * req.n + d.index, d.text, d.finish_reason, lp)
        if include_usage:
            p = sum(g.prompt_tokens for g in gens)
            c = sum(g.completion_tokens for g in gens)
            yield sse_event({**base, "choices": [],
                             "usage": {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}})
    except Exception as exc:  # noqa: BLE001 -
        yield sse_event(error_payload(from_exception(exc)))
    finally:
        for gen in gens:  # prompts never started are closed too (frees nothing, but tidy)
            await gen.close()
    yield DONE
