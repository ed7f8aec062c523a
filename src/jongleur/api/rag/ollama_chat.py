"""`collections` on Ollama's `/api/chat` (a jongleur extension, as on `/v1/chat/completions`):
retrieve as the caller, put the numbered sources in the prompt, and return the citations in the
final object (the last NDJSON line when streaming). Kept apart from the Ollama route, which only
calls these two functions."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from jongleur.api.tokenization import ModelText
from jongleur.catalog.served import ServedModel


async def augment_ollama_chat(request: Request, principal: Any, served: ServedModel, messages: list[dict[str, Any]],
                              collections: list[str] | None, num_predict: int | None,
                              ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages with the sources, citations); unchanged messages and None without collections."""
    if not collections:
        return messages, None
    from jongleur.api.rag.chat import augment

    max_tokens = num_predict if num_predict is not None and num_predict > 0 else None
    augmented, cited = await augment(request.app, principal, ModelText(served), messages, collections, max_tokens)
    return augmented, [c.to_dict() for c in cited]


def citations_field(citations: list[dict[str, Any]] | None) -> dict[str, Any]:
    """What the final object gains: `citations` only when the request named collections."""
    return {} if citations is None else {"citations": citations}
