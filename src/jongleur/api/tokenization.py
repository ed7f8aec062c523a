"""The API's edge to a model's tokenizer and chat template (`ServedModel.tokenizer` / `.chat_template`).

Keeps the routes independent of the tokenizer package's exact call shapes. Plain user text is
always encoded without special-token parsing, so `<|im_start|>` typed by a user stays text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jongleur.api.errors import APIError, bad_request
from jongleur.auth import hooks
from jongleur.catalog.served import ServedModel

# ServedModel identity -> (model, compiled template); a hot swap brings a new ServedModel
_TEMPLATES: dict[int, tuple[ServedModel, Any]] = {}


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

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Plain text -> ids; special-token strings in it stay text. `add_special_tokens` adds BOS
        where the model uses one (raw completion prompts). Input guardrails apply first."""
        text = hooks.guard_input(text, "prompt")
        return list(self.tok.encode(text, add_special_tokens=add_special_tokens))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        try:
            return str(self.tok.decode(list(ids), skip_special_tokens=skip_special_tokens))
        except TypeError:
            return str(self.tok.decode(list(ids)))

    def token_text(self, token_id: int) -> str:
        return self.decode([token_id], skip_special_tokens=False)

    def _template(self) -> Any:
        """The model's renderer: a `ChatTemplate` built once from the template source, or an object
        with `render()` (tests)."""
        template = self.served.chat_template
        if template is None:
            raise bad_request(
                f"the model {self.served.name!r} has no chat template; use /v1/completions", param="messages"
            )
        if not isinstance(template, str):
            return template
        cached = _TEMPLATES.get(id(self.served))
        if cached is None or cached[0] is not self.served:
            from jongleur.tokenizer import ChatTemplate

            cached = (self.served, ChatTemplate.for_tokenizer(self.tok, override=template))
            _TEMPLATES[id(self.served)] = cached
        return cached[1]

    def render_chat(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None,
        add_generation_prompt: bool = True,
    ) -> list[int]:
        """Chat messages -> prompt token ids, through the model's (sandboxed) chat template. Message
        text stays plain text even where it spells a special token."""
        template = self._template()
        messages = [{**m, "content": hooks.guard_input(m["content"], "messages")}
                    if isinstance(m.get("content"), str) else m for m in messages]
        try:
            if hasattr(template, "render_ids"):
                rendered = template.render_ids(self.tok, messages, tools=tools,
                                               add_generation_prompt=add_generation_prompt)
                return list(rendered.token_ids)
            text = template.render(messages, tools=tools, add_generation_prompt=add_generation_prompt)
        except APIError:
            raise
        except ValueError as exc:  # ChatTemplateError: the template refused this conversation
            raise bad_request(f"the chat template rejected the messages: {exc}", param="messages") from None
        return list(self.tok.encode_prompt(text))

    def check_prompt_ids(self, ids: Sequence[int], param: str) -> None:
        vocab = self.vocab_size
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, int) or i < 0 or (vocab and i >= vocab):
                raise bad_request(f"token id {i!r} is outside the vocabulary (size {vocab})", param=param)
