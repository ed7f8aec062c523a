"""The chat side of RAG: `augment` (used by `/v1/chat/completions` when a request names
`collections`) and `generate_text` (a whole answer without HTTP, for MCP's `ask`)."""

from __future__ import annotations

from typing import Any

from jongleur.api.errors import bad_request
from jongleur.api.generation import (
    Generation,
    build_sampling,
    make_engine_request,
    new_id,
    require_engine,
    resolve_max_tokens,
)
from jongleur.api.openai.common import SamplingFields
from jongleur.api.rag.deps import api_error, rag_service, request_caller
from jongleur.api.tokenization import ModelText
from jongleur.engine.types import Priority
from jongleur.rag.augment import Citation, build_augmentation, last_user_text, merge_system
from jongleur.rag.parsing import DocumentError
from jongleur.rag.store import StoreError

RAG_TOP_K = 8
MAX_COLLECTIONS = 16


def context_budget(text: ModelText, prompt_tokens: int, max_tokens: int | None, default_max: int) -> int:
    """Tokens the sources may use: the window, less the conversation and the answer's reserve."""
    window = text.window or 4096
    reserve = max_tokens if max_tokens is not None else min(default_max, max(256, window // 4))
    return max(0, window - prompt_tokens - reserve - 32)


async def augment(app: Any, principal: Any, text: ModelText, messages: list[dict[str, Any]],
                  collections: list[str], max_tokens: int | None, k: int = RAG_TOP_K,
                  ) -> tuple[list[dict[str, Any]], list[Citation]]:
    """Retrieve from `collections` as `principal` and put the numbered sources in the prompt."""
    if len(collections) > MAX_COLLECTIONS:
        raise bad_request(f"at most {MAX_COLLECTIONS} collections per request", param="collections")
    query = last_user_text(messages)
    if not query:
        raise bad_request("a request with collections needs a user message with text", param="messages")
    try:
        hits = await rag_service(app).search(request_caller(principal), collections, query, k)
    except (StoreError, DocumentError) as exc:
        err = api_error(exc)
        err.param = "collections"
        raise err from None
    prompt_tokens = len(text.render_chat(messages, None))
    budget = context_budget(text, prompt_tokens, max_tokens, app.state.settings.default_max_tokens)
    aug = build_augmentation(hits, lambda s: len(text.encode(s)), budget)
    return merge_system(messages, aug.system), aug.citations


async def generate_text(app: Any, principal: Any, model: str | None, messages: list[dict[str, Any]],
                        max_tokens: int | None = None, temperature: float = 0.0,
                        tools: list[dict[str, Any]] | None = None, guided: Any = None,
                        skip_special_tokens: bool = True) -> tuple[str, int, int, str]:
    """One whole chat answer: (text, prompt tokens, completion tokens, finish reason)."""
    state = app.state
    served = await state.registry.aresolve(model, "chat")  # a store model loads on first use
    require_engine(served)
    text = ModelText(served)
    prompt_ids = text.render_chat(messages, tools)
    limit = resolve_max_tokens(max_tokens, len(prompt_ids), text.window, state.settings.default_max_tokens,
                               prompt_param="messages", max_param="max_tokens")
    fields = SamplingFields(temperature=temperature)
    sampling = build_sampling(fields, max_tokens=limit, vocab_size=text.vocab_size, guided=guided)
    engine_req = make_engine_request(new_id("rag"), prompt_ids, sampling, Priority.NORMAL, principal)
    gen = Generation(served, text, engine_req, [], state.metrics, skip_special_tokens)
    await gen.start()
    result = (await gen.collect())[0]
    return result.text, gen.prompt_tokens, gen.completion_tokens, result.finish_reason or "stop"
