"""`POST /v1/chat/completions`: messages -> chat template -> engine -> message or SSE chunks."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from jongleur.api.errors import bad_request, error_payload, from_exception
from jongleur.api.generation import (
    ChoiceResult,
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
from jongleur.api.openai.chat_protocol import (
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChoiceLogprobs,
    ResponseMessage,
    TokenLogprobOut,
    ToolCall,
    TopLogprob,
)
from jongleur.api.openai.common import ContextInfo, Usage
from jongleur.api.security import Principal
from jongleur.api.sse import DONE, sse, sse_event
from jongleur.api.tokenization import ModelText
from jongleur.api.tool_choice import forced_call_constraint, parse_forced
from jongleur.catalog.served import ServedModel
from jongleur.engine.types import GuidedDecoding, TokenLogprob
from jongleur.tokenizer.tool_calls import ToolCallDelta, ToolParser, tool_parser_for


def message_dicts(req: ChatCompletionRequest) -> list[dict[str, Any]]:
    """Messages as the chat template expects them: content as one string, tool calls as objects."""
    out = []
    for i, m in enumerate(req.messages):
        if isinstance(m.content, list):
            texts = []
            for j, part in enumerate(m.content):
                if part.type not in ("text", "input_text"):
                    raise bad_request(f"content part type {part.type!r} is not supported by this model",
                                      param=f"messages[{i}].content[{j}].type")
                texts.append(part.text or "")
            content: str | None = "".join(texts)
        else:
            content = m.content
        msg: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": content or ""}
        if m.name:
            msg["name"] = m.name
        if m.tool_calls:
            calls = []
            for call in m.tool_calls:
                args = call.function.arguments
                if isinstance(args, str):
                    try:
                        args = json.loads(args) if args.strip() else {}
                    except ValueError:
                        raise bad_request("tool call arguments must be a JSON object",
                                          param=f"messages[{i}].tool_calls") from None
                calls.append({"id": call.id, "type": "function",
                              "function": {"name": call.function.name, "arguments": args}})
            msg["tool_calls"] = calls
        if m.tool_call_id:
            msg["tool_call_id"] = m.tool_call_id
        out.append(msg)
    return out


def guided_for(req: ChatCompletionRequest, tools: list[dict[str, Any]] | None) -> tuple[GuidedDecoding | None, str]:
    """(constraint, tool mode): mode is "none", "auto", "required" or "named:<fn>"."""
    choice = req.tool_choice
    mode = "none"
    if tools:
        if choice is None or choice == "auto":
            mode = "auto"
        elif choice == "required":
            mode = "required"
        elif not isinstance(choice, str):
            names = {t["function"]["name"] for t in tools}
            if choice.function.name not in names:
                raise bad_request(f"tool_choice names {choice.function.name!r}, which is not in tools",
                                  param="tool_choice")
            mode = "named:" + choice.function.name
    elif choice not in (None, "none", "auto"):
        raise bad_request("tool_choice requires tools", param="tool_choice")
    guided = None
    rf = req.response_format
    if rf is not None and rf.type != "text":
        if mode == "required" or mode.startswith("named:"):
            raise bad_request("response_format cannot be combined with a forced tool_choice",
                              param="response_format")
        if rf.type == "json_object":
            guided = GuidedDecoding("json_object")
        else:
            if rf.json_schema is None or rf.json_schema.schema_ is None:
                raise bad_request("response_format.json_schema.schema is required",
                                  param="response_format.json_schema")
            guided = GuidedDecoding("json_schema", json.dumps(rf.json_schema.schema_))
    if mode == "required" or mode.startswith("named:"):
        assert tools is not None
        guided = forced_call_constraint(tools, mode[6:] if mode.startswith("named:") else None)
    return guided, mode


def tool_parser(served: ServedModel, tool_names: set[str]) -> ToolParser:
    """The model's tool-call parser; an untagged JSON call to one of `tool_names` counts too."""
    return tool_parser_for(parser=served.tool_parser, bare_names=frozenset(tool_names))


def logprobs_out(text: ModelText, items: list[TokenLogprob]) -> ChoiceLogprobs:
    def entry(token_id: int, logprob: float) -> tuple[str, float, list[int]]:
        s = text.token_text(token_id)
        return s, max(logprob, -9999.0), list(s.encode("utf-8", "replace"))

    content = []
    for lp in items:
        tok, val, raw = entry(lp.token_id, lp.logprob)
        tops = [TopLogprob(token=t, logprob=v, bytes=b) for t, v, b in (entry(i, p) for i, p in lp.top)]
        content.append(TokenLogprobOut(token=tok, logprob=val, bytes=raw, top_logprobs=tops))
    return ChoiceLogprobs(content=content)


async def create_chat_completion(request: Request, req: ChatCompletionRequest, principal: Principal) -> Response:
    state = request.app.state
    served = await state.registry.aresolve(req.model, "chat")
    require_engine(served)
    text = ModelText(served)
    messages = message_dicts(req)
    citations: list[dict[str, Any]] | None = None
    if req.collections:  # extension: retrieval-augmented answer with citations (api/rag/chat.py)
        from jongleur.api.rag.chat import augment

        messages, cited = await augment(request.app, principal, text, messages, req.collections,
                                        req.max_completion_tokens or req.max_tokens)
        citations = [c.to_dict() for c in cited]
    if req.mcp_tools:  # extension: server-side MCP tool loop (mcp/tool_loop.py)
        from jongleur.mcp.tool_loop import run_tool_chat

        return await run_tool_chat(request, req, principal, served, messages, citations)
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    guided, tool_mode = guided_for(req, tools)
    prompt_ids = text.render_chat(messages, tools if tool_mode != "none" else None,
                                  req.add_generation_prompt)
    requested = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
    param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    max_tokens = resolve_max_tokens(requested, len(prompt_ids), text.window, state.settings.default_max_tokens,
                                    prompt_param="messages", max_param=param)
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    if req.top_logprobs and not req.logprobs:
        raise bad_request("top_logprobs requires logprobs=true", param="top_logprobs")
    sampling = build_sampling(req, max_tokens=max_tokens, vocab_size=text.vocab_size, logprobs=logprobs,
                              guided=guided, defaults=served.default_sampling)
    rid = new_id("chatcmpl")
    engine_req = make_engine_request(rid, prompt_ids, sampling, resolve_priority(req.priority, principal), principal)
    # Qwen's <tool_call> markers are special tokens: keep them in the text when tools may be called
    skip_special = req.skip_special_tokens and tool_mode != "auto"
    gen = Generation(served, text, engine_req, stop_list(req.stop), state.metrics, skip_special)
    try:
        await until_disconnect(request, gen.start())
    except ClientDisconnected:
        return Response(status_code=499)
    created = int(time.time())
    window = text.window
    if req.stream:
        names = {t.function.name for t in req.tools or []}
        parser = tool_parser(served, names) if tool_mode == "auto" else None
        return sse(_stream(req, gen, text, rid, created, served.name, tool_mode, parser, window, citations))
    try:
        results = await until_disconnect(request, gen.collect())
    except ClientDisconnected:
        return Response(status_code=499)
    parser = tool_parser(served, {t["function"]["name"] for t in tools or []})
    choices = [_final_choice(r, text, tool_mode, req.logprobs, parser) for r in results]
    usage = Usage(prompt_tokens=gen.prompt_tokens, completion_tokens=gen.completion_tokens,
                  total_tokens=gen.prompt_tokens + gen.completion_tokens,
                  prompt_tokens_details={"cached_tokens": gen.cached_tokens})
    longest = max((len(r.token_ids) for r in results), default=0)
    body = ChatCompletionResponse(
        id=rid, created=created, model=served.name, choices=choices, usage=usage,
        context=ContextInfo(prompt_tokens=gen.prompt_tokens, window=window,
                            remaining=max(0, window - gen.prompt_tokens - longest)),
        citations=citations,
    )
    unset = {k for k in ("citations", "tool_steps") if getattr(body, k) is None}  # extensions only when used
    return JSONResponse(body.model_dump(mode="json", exclude=unset))


def _final_choice(
    r: ChoiceResult, text: ModelText, tool_mode: str, want_logprobs: bool, parser: ToolParser
) -> ChatChoice:
    content: str | None = r.text
    calls = []
    if tool_mode == "auto":
        parsed = parser.parse(r.text)
        content, calls = parsed.content, parsed.tool_calls
    elif tool_mode == "required" or tool_mode.startswith("named:"):
        calls = parse_forced(r.text, tool_mode[6:] if tool_mode.startswith("named:") else None)
        if calls:
            content = None
    tool_calls = [ToolCall(**c.to_openai()) for c in calls] or None
    finish = "tool_calls" if tool_calls and r.finish_reason == "stop" else r.finish_reason
    if tool_calls and not content:
        content = None
    return ChatChoice(
        index=r.index,
        message=ResponseMessage(content=content, tool_calls=tool_calls),
        logprobs=logprobs_out(text, r.logprobs) if want_logprobs else None,
        finish_reason=finish,
    )


async def _stream(
    req: ChatCompletionRequest, gen: Generation, text: ModelText, rid: str, created: int, model: str,
    tool_mode: str, parser: ToolParser | None, window: int, citations: list[dict[str, Any]] | None = None,
) -> AsyncIterator[bytes]:
    n = req.n
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    continuous = bool(req.stream_options and req.stream_options.continuous_usage_stats)
    base = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
    streams = [parser.stream() for _ in range(n)] if parser is not None else None
    forced_text = [""] * n
    call_counts = [0] * n

    def usage() -> dict[str, Any]:
        return {"prompt_tokens": gen.prompt_tokens, "completion_tokens": gen.completion_tokens,
                "total_tokens": gen.prompt_tokens + gen.completion_tokens}

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> bytes:
        body: dict[str, Any] = {**base, "choices": [
            {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}
        if continuous:
            body["usage"] = usage()
        return sse_event(body)

    def call_delta(index: int, calls: list[ToolCallDelta]) -> dict[str, Any]:
        call_counts[index] += len(calls)
        return {"tool_calls": [call.to_openai() for call in calls]}

    try:
        for i in range(n):
            first = chunk(i, {"role": "assistant", "content": ""})
            if citations is not None and i == 0:  # extension: the sources, before the answer
                first = sse_event({**json.loads(first[6:]), "citations": citations})
            yield first
        async for d in gen.deltas():
            lp = logprobs_out(text, d.logprobs).model_dump(mode="json") if (req.logprobs and d.logprobs) else None
            content, calls = d.text, []
            if streams is not None:
                parsed = streams[d.index].feed(d.text)
                content, calls = parsed.content, list(parsed.tool_calls)
                if d.finish_reason is not None:
                    rest = streams[d.index].finish()
                    content += rest.content
                    calls += rest.tool_calls
            elif tool_mode != "none":
                forced_text[d.index] += d.text
                content = ""
                if d.finish_reason is not None:
                    named = tool_mode[6:] if tool_mode.startswith("named:") else None
                    calls = [ToolCallDelta(i, c.id, c.name, c.arguments)
                             for i, c in enumerate(parse_forced(forced_text[d.index], named))]
            if content or lp is not None:
                yield chunk(d.index, {"content": content}, logprobs=lp)
            if calls:
                yield chunk(d.index, call_delta(d.index, calls))
            if d.finish_reason is not None:
                finish = "tool_calls" if call_counts[d.index] and d.finish_reason == "stop" else d.finish_reason
                yield chunk(d.index, {}, finish=finish)
        if include_usage:
            body = {**base, "choices": [], "usage": usage(),
                    "context": {"prompt_tokens": gen.prompt_tokens, "window": window,
                                "remaining": max(0, window - gen.prompt_tokens - gen.completion_tokens // n)}}
            yield sse_event(body)
    except Exception as exc:  # noqa: BLE001 -  # mid-stream failure: tell the client in OpenAI's shape, then end
        err = from_exception(exc)
        yield sse_event(error_payload(err))
    yield DONE
