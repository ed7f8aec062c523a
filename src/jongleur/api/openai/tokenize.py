"""Extensions `POST /tokenize` and `POST /detokenize` (vLLM-compatible shapes)."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import Field

from jongleur.api.openai.chat_protocol import ChatMessage, Tool
from jongleur.api.openai.common import StrictModel
from jongleur.api.tokenization import ModelText


class TokenizeRequest(StrictModel):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    tools: list[Tool] | None = None
    add_generation_prompt: bool = True


class DetokenizeRequest(StrictModel):
    model: str | None = None
    tokens: list[int] = Field(max_length=1_000_000)


async def tokenize(request: Request, req: TokenizeRequest) -> dict[str, Any]:
    from jongleur.api.errors import bad_request
    from jongleur.api.openai.chat_protocol import ChatCompletionRequest
    from jongleur.api.openai.chat_serving import message_dicts

    served = await request.app.state.registry.aresolve(req.model, "chat")  # store models load on first use
    text = ModelText(served)
    if (req.prompt is None) == (req.messages is None):
        raise bad_request("give exactly one of prompt and messages", param="prompt")
    if req.prompt is not None:
        ids = text.encode(req.prompt)
    else:
        chat = ChatCompletionRequest(messages=req.messages or [])
        tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
        ids = text.render_chat(message_dicts(chat), tools, req.add_generation_prompt)
    return {"tokens": ids, "count": len(ids), "max_model_len": text.window}


async def detokenize(request: Request, req: DetokenizeRequest) -> dict[str, Any]:
    served = await request.app.state.registry.aresolve(req.model, "chat")  # store models load on first use
    text = ModelText(served)
    text.check_prompt_ids(req.tokens, "tokens")
    return {"prompt": text.decode(req.tokens, skip_special_tokens=False)}
