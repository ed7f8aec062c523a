"""Ollama's routes: `/api/chat`, `/api/generate` (NDJSON streams by default), `/api/embed`,
`/api/embeddings`, `/api/tags`, `/api/show`, `/api/ps`, `/api/version`.

Options map onto our sampling parameters (`num_predict` -> max_tokens, `repeat_penalty` ->
repetition_penalty...); `format` is "json" or a JSON schema, enforced by constrained decoding.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from jongleur import __version__
from jongleur.api.body import parse_body
from jongleur.api.errors import bad_request, from_exception
from jongleur.api.generation import (
    ClientDisconnected,
    Generation,
    build_sampling,
    make_engine_request,
    new_id,
    require_engine,
    resolve_max_tokens,
    stop_list,
    until_disconnect,
)
from jongleur.api.ollama.keep_alive import ps_fields
from jongleur.api.ollama.protocol import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    Options,
    ShowRequest,
)
from jongleur.api.openai.common import SamplingFields
from jongleur.api.openai.embeddings_serving import run_embeddings
from jongleur.api.rag.ollama_chat import augment_ollama_chat, citations_field
from jongleur.api.security import Principal, PrincipalDep, get_principal
from jongleur.api.sse import ndjson, ndjson_line
from jongleur.api.tokenization import ModelText
from jongleur.catalog.served import ServedModel
from jongleur.engine.types import GuidedDecoding
from jongleur.tokenizer.tool_calls import tool_parser_for

router = APIRouter(prefix="/api", tags=["ollama"], dependencies=[Depends(get_principal)])
public_router = APIRouter(prefix="/api", tags=["ollama"])  # /api/version: clients probe it before any key

OLLAMA_VERSION = "0.12.0"  # the Ollama API level we follow; our own version is in `jongleur`


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _guided(fmt: str | dict[str, Any] | None) -> GuidedDecoding | None:
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return GuidedDecoding("json_object")
    if isinstance(fmt, dict):
        return GuidedDecoding("json_schema", json.dumps(fmt))
    raise bad_request("format must be 'json' or a JSON schema object", param="format")


OLLAMA_DEFAULTS = {"temperature": 0.8, "top_p": 0.9, "top_k": 40}  # Ollama's, under the model's own
OLLAMA_NAMES = {"repetition_penalty": "repeat_penalty"}  # our sampling names where Ollama's differ


def _sampling_fields(opts: Options | None) -> tuple[SamplingFields, int | None]:
    o = opts or Options()
    fields = SamplingFields(
        temperature=o.temperature,
        top_p=o.top_p,
        top_k=o.top_k,
        min_p=o.min_p,
        seed=o.seed,
        stop=o.stop,
        repetition_penalty=o.repeat_penalty,
        presence_penalty=o.presence_penalty,
        frequency_penalty=o.frequency_penalty,
    )
    max_tokens = o.num_predict if o.num_predict is not None and o.num_predict > 0 else None
    return fields, max_tokens


async def _prepare(
    request: Request, served: ServedModel, prompt_ids: list[int], opts: Options | None,
    fmt: str | dict[str, Any] | None, principal: Principal,
) -> Generation:
    state = request.app.state
    text = ModelText(served)
    fields, requested = _sampling_fields(opts)
    max_tokens = resolve_max_tokens(requested, len(prompt_ids), text.window, state.settings.default_max_tokens,
                                    prompt_param="prompt", max_param="options.num_predict")
    sampling = build_sampling(fields, max_tokens=max_tokens, vocab_size=text.vocab_size, guided=_guided(fmt),
                              defaults={**OLLAMA_DEFAULTS, **served.default_sampling})
    engine_req = make_engine_request(new_id("ollama"), prompt_ids, sampling, principal.max_priority, principal)
    gen = Generation(served, text, engine_req, stop_list(fields.stop, "options.stop"), state.metrics)
    await until_disconnect(request, gen.start())
    return gen


def _stats(gen: Generation, started: float) -> dict[str, Any]:
    total = int((time.monotonic() - started) * 1e9)
    return {"total_duration": total, "load_duration": 0, "prompt_eval_count": gen.prompt_tokens,
            "prompt_eval_duration": 0, "eval_count": gen.completion_tokens, "eval_duration": total}


def _ollama_calls(served: ServedModel, text: str) -> tuple[str, list[dict[str, Any]]]:
    parsed = tool_parser_for(parser=served.tool_parser).parse(text)
    return parsed.content, [{"function": {"name": c.name, "arguments": json.loads(c.arguments)}}
                            for c in parsed.tool_calls]


async def _resolve(request: Request, model: str, keep_alive: float | None) -> ServedModel:
    """The model, loaded on first use; the request's keep-alive applies to it from now on."""
    registry = request.app.state.registry
    served = await registry.aresolve(model, "chat")
    require_engine(served)
    registry.set_keep_alive(served, keep_alive)
    return served


@router.post("/chat")
async def chat(request: Request, principal: PrincipalDep) -> Response:
    req = await parse_body(request, ChatRequest)
    if not req.messages and req.keep_alive == 0:  # Ollama's way to unload a model
        await request.app.state.registry.unload_soon(req.model)
        return JSONResponse({"model": req.model, "created_at": _now(), "message": {"role": "assistant",
                             "content": ""}, "done": True, "done_reason": "unload"})
    served = await _resolve(request, req.model, req.keep_alive)
    if not req.messages:  # Ollama answers an empty chat by loading the model
        return JSONResponse({"model": req.model, "created_at": _now(), "message": {"role": "assistant",
                             "content": ""}, "done": True, "done_reason": "load"})
    messages = []
    for m in req.messages:
        msg: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            msg["tool_calls"] = [{"type": "function", "function": {
                "name": c.function.name,
                "arguments": c.function.arguments if isinstance(c.function.arguments, dict)
                else json.loads(c.function.arguments or "{}")}} for c in m.tool_calls]
        messages.append(msg)
    messages, citations = await augment_ollama_chat(request, principal, served, messages, req.collections,
                                                    req.options.num_predict if req.options else None)
    tools = req.tools or None
    prompt_ids = ModelText(served).render_chat(messages, tools, True)
    started = time.monotonic()
    try:
        gen = await _prepare(request, served, prompt_ids, req.options, req.format, principal)
    except ClientDisconnected:
        return Response(status_code=499)
    base = {"model": req.model}
    if req.stream and not tools:
        async def lines() -> AsyncIterator[bytes]:
            try:
                async for d in gen.deltas():
                    if d.text:
                        yield ndjson_line({**base, "created_at": _now(),
                                           "message": {"role": "assistant", "content": d.text}, "done": False})
                    if d.finish_reason is not None:
                        yield ndjson_line({**base, "created_at": _now(), "message": {"role": "assistant",
                                           "content": ""}, "done": True, "done_reason": d.finish_reason,
                                           **_stats(gen, started), **citations_field(citations)})
            except Exception as exc:  # noqa: BLE001 -
                yield ndjson_line({"error": from_exception(exc).message})
        return ndjson(lines())
    try:
        results = await until_disconnect(request, gen.collect())
    except ClientDisconnected:
        return Response(status_code=499)
    r = results[0]
    content, calls = _ollama_calls(served, r.text) if tools else (r.text, [])
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    final = {**base, "created_at": _now(), "message": message, "done": True,
             "done_reason": r.finish_reason or "stop", **_stats(gen, started), **citations_field(citations)}
    if req.stream:  # tools + stream: Ollama sends the call in one line, then the final line
        return ndjson(_single(final))
    return JSONResponse(final)


async def _single(line: dict[str, Any]) -> AsyncIterator[bytes]:
    yield ndjson_line(line)


@router.post("/generate")
async def generate(request: Request, principal: PrincipalDep) -> Response:
    req = await parse_body(request, GenerateRequest)
    if not req.prompt and not req.context and req.keep_alive == 0:  # Ollama's way to unload a model
        await request.app.state.registry.unload_soon(req.model)
        return JSONResponse({"model": req.model, "created_at": _now(), "response": "", "done": True,
                             "done_reason": "unload"})
    served = await _resolve(request, req.model, req.keep_alive)
    if req.template:
        raise bad_request("custom templates are not accepted", param="template")
    if req.suffix:
        raise bad_request("suffix is not supported", param="suffix")
    if not req.prompt and not req.context:
        return JSONResponse({"model": req.model, "created_at": _now(), "response": "", "done": True,
                             "done_reason": "load"})
    text = ModelText(served)
    if req.raw or served.chat_template is None:
        prompt_ids = text.encode(req.prompt)
    else:
        messages = ([{"role": "system", "content": req.system}] if req.system else []) + [
            {"role": "user", "content": req.prompt}]
        prompt_ids = text.render_chat(messages, None, True)
    if req.context:
        text.check_prompt_ids(req.context, "context")
        prompt_ids = list(req.context) + prompt_ids
    started = time.monotonic()
    try:
        gen = await _prepare(request, served, prompt_ids, req.options, req.format, principal)
    except ClientDisconnected:
        return Response(status_code=499)
    base = {"model": req.model}
    generated: list[int] = []

    def final_line(reason: str) -> dict[str, Any]:
        return {**base, "created_at": _now(), "response": "", "done": True, "done_reason": reason,
                "context": prompt_ids + generated, **_stats(gen, started)}

    if req.stream:
        async def lines() -> AsyncIterator[bytes]:
            try:
                async for d in gen.deltas():
                    generated.extend(d.token_ids)
                    if d.text:
                        yield ndjson_line({**base, "created_at": _now(), "response": d.text, "done": False})
                    if d.finish_reason is not None:
                        yield ndjson_line(final_line(d.finish_reason))
            except Exception as exc:  # noqa: BLE001 -
                yield ndjson_line({"error": from_exception(exc).message})
        return ndjson(lines())
    try:
        results = await until_disconnect(request, gen.collect())
    except ClientDisconnected:
        return Response(status_code=499)
    generated.extend(results[0].token_ids)
    final = final_line(results[0].finish_reason or "stop")
    final["response"] = results[0].text
    return JSONResponse(final)


@router.post("/embed")
async def embed(request: Request) -> dict[str, Any]:
    req = await parse_body(request, EmbedRequest)
    served = request.app.state.registry.resolve(req.model, "embedding")
    texts = [req.input] if isinstance(req.input, str) else list(req.input)
    if not texts:
        raise bad_request("input is empty", param="input")
    if len(texts) > request.app.state.settings.embedding_max_batch:
        raise bad_request("too many inputs", param="input")
    started = time.monotonic()
    result = await run_embeddings(served, texts)
    if not req.truncate and any(result.truncated):
        raise bad_request("input exceeds the model's context length and truncate is false", param="input")
    return {"model": req.model, "embeddings": result.vectors,
            "total_duration": int((time.monotonic() - started) * 1e9), "load_duration": 0,
            "prompt_eval_count": result.total_tokens}


@router.post("/embeddings")
async def embeddings(request: Request) -> dict[str, Any]:
    req = await parse_body(request, EmbeddingsRequest)
    served = request.app.state.registry.resolve(req.model, "embedding")
    result = await run_embeddings(served, [req.prompt])
    return {"embedding": result.vectors[0]}


def _details(served: ServedModel) -> dict[str, Any]:
    d = served.details or {}
    return {"parent_model": "", "format": d.get("format", "gguf"), "family": served.architecture or "",
            "families": [served.architecture] if served.architecture else None,
            "parameter_size": d.get("parameter_size", ""), "quantization_level": d.get("quantization", "")}


def _digest(served: ServedModel) -> str:
    import hashlib

    return hashlib.sha256(f"{served.name}@{served.version}".encode()).hexdigest()


def _entry(served: ServedModel) -> dict[str, Any]:
    name = served.name.replace("@", ":")  # store versions: name@tag -> Ollama's name:tag
    name = name if ":" in name else name + ":latest"
    return {"name": name, "model": name,
            "modified_at": datetime.fromtimestamp(served.created, UTC).isoformat().replace("+00:00", "Z"),
            "size": int((served.details or {}).get("size", 0)), "digest": _digest(served),
            "details": _details(served)}


@router.get("/tags")
async def tags(request: Request) -> dict[str, Any]:
    return {"models": [_entry(m) for m in request.app.state.registry.models()]}


@router.get("/ps")
async def ps(request: Request) -> dict[str, Any]:
    models = []
    for m in request.app.state.registry.loaded_models():
        entry = _entry(m)
        entry.pop("modified_at")
        entry.update({**ps_fields(request.app.state.registry, m), "context_length": m.context_window or None})
        models.append(entry)
    return {"models": models}


@router.post("/show")
async def show(request: Request) -> dict[str, Any]:
    req = await parse_body(request, ShowRequest)
    name = req.model or req.name
    if not name:
        raise bad_request("model is required", param="model")
    served = request.app.state.registry.find(name)
    if served is None:
        from jongleur.api.errors import not_found

        raise not_found(f"model '{name}' not found")
    caps = ["embedding"] if served.kind == "embedding" else ["completion"] + (["tools"] if served.tool_parser else [])
    info = {"general.architecture": served.architecture, "general.name": served.name}
    if served.context_window:
        info[f"{served.architecture or 'model'}.context_length"] = served.context_window
    parameters = "\n".join(f"{OLLAMA_NAMES.get(k, k)} {v}" for k, v in served.default_sampling.items())
    return {"modelfile": f"FROM {served.source_path}\n", "parameters": parameters, "template": "",
            "details": _details(served), "model_info": info, "capabilities": caps,
            "modified_at": _entry(served)["modified_at"]}


@public_router.get("/version")
async def version() -> dict[str, str]:
    return {"version": OLLAMA_VERSION, "jongleur": __version__}
