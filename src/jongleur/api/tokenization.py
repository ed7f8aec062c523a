"""The API's edge to a model's tokenizer and chat template (`ServedModel.tokenizer` / `.chat_template`).

Keeps the routes independent of the tokenizer package's exact call shapes. Plain user text is
always encoded without special-token parsing, so `<|im_start|>` typed by a user stays text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jongleur.api.errors import APIError, bad_request
from jongleur.catalog.served import ServedModel


class ModelText:
    def __init__(self, served: ServedModel) -> None:
        self.served = served
        self.tok = served.tokenizer

    @property
    def vocab_size(self) -> int:
        if self.served.engine is not None:
            return self.served.engine.info.vocab_size
        return int(getattr(self.tok, "vocab_size", 0) or 0)

    @property
    def window(self) -> int:
        if self.served.context_window:
            return self.served.context_window
        if self.served.engine is not None:
            return self.served.engine.info.max_model_len
        return 0

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        try:
            return str(self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens))
        except TypeError:
            return str(self.tok.decode(list(ids)))

    def token_text(self, token_id: int) -> str:
        return self.decode([token_id], skip_special_tokens=False)

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        add_generation_prompt: bool = True,
    ) -> list[int]:
        """Chat messages -> prompt token ids, through the model's (sandboxed) chat template."""
        template = self.served.chat_template
        if template is None:
            raise bad_request(
                f"the model {self.served.name!r} has no chat template; use /v1/completions", param="messages"
            )
        try:
            rendered = template.render(messages, tools=tools, add_generation_prompt=add_generation_prompt)
        except APIError:
            raise
        except ValueError as exc:  # template raised on the conversation (e.g. roles out of order)
            raise bad_request(f"the chat template rejected the messages: {exc}", param="messages") from None
        if isinstance(rendered, str):
            # the rendered prompt holds the template's control tokens: parse specials here only
            encode_chat = getattr(self.tok, "encode_chat", None) or getattr(self.tok, "encode_prompt", None)
            if encode_chat is not None:
                return list(encode_chat(rendered))
            try:
                return list(self.tok.encode(rendered, allow_special=True))
            except TypeError:
                return list(self.tok.encode(rendered))
        return list(rendered)

    def check_prompt_ids(self, ids: Sequence[int], param: str) -> None:
        vocab = self.vocab_size
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int) or i < 0 or (vocab and i >= vocab):
                raise bad_request(f"token id {i!r} is outside the vocabulary (size {vocab})", param=param)
