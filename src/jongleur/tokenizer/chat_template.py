"""Chat templates: render a model's Jinja template safely, and tokenize the result without letting
user content become control tokens.

Rendering matches transformers' `apply_chat_template` byte for byte (same sandboxed environment,
`tojson`, `raise_exception`, `strftime_now`, `namespace`, `{% generation %}`). Templates come only
from the model (GGUF metadata, tokenizer_config.json) or a per-model override; a request can never
supply one. Models without a template get `default_template_for()` (Gemma's turn format for the
gemma family, a plain "role: content" format otherwise).

Tokenizing: every special-token string inside messages and tools is swapped for a placeholder
before rendering, the template's own markers become control tokens, and the placeholders become
the original characters again, tokenized as plain text (`render_ids`).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.sandbox
import jinja2.utils

from jongleur.engine.errors import InvalidRequestError
from jongleur.tokenizer.tokenizer import Tokenizer

MAX_RENDERED_CHARS = 8_000_000
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")

GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else 'user' -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ (message['content'] or '') | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
PLAIN_TEMPLATE = (
    "{%- for message in messages -%}{{ message['role'] }}: {{ message['content'] or '' }}\n\n{% endfor -%}"
    "{%- if add_generation_prompt -%}assistant:{%- endif -%}"
)


class ChatTemplateError(InvalidRequestError):
    """The template failed to compile or render (including a blocked sandbox escape), or the
    messages cannot be rendered. The message is safe to show to the client."""

    def __init__(self, message: str) -> None:
        super().__init__(message, param="messages")


def default_template_for(architecture: str | None) -> str:
    """The template used when a model ships none (e.g. the Gemma 3 270M base GGUF)."""
    if architecture and architecture.lower().startswith("gemma"):
        return GEMMA_TEMPLATE
    return PLAIN_TEMPLATE


class _GenerationTag(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (transformers' assistant-mask tag) renders its body."""

    tags = {"generation"}  # noqa: RUF012 - jinja reads this class attribute

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller: Callable[[], str]) -> str:
        return caller()


class _Namespace(jinja2.utils.Namespace):
    """`namespace()` that refuses underscore names (no reaching CPython internals through it)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # jinja's signature trick: `self` may be a key
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: object) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"namespace attribute {name!r} is not allowed")


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> jinja2.sandbox.ImmutableSandboxedEnvironment:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols],
        loader=None, autoescape=False,
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _Namespace
    env.globals["dict"] = lambda *a, **k: dict(*a, **k)
    return env


_ENV = _environment()


@dataclass(frozen=True)
class RenderedPrompt:
    """A rendered chat: the text as the model sees it, and its token ids."""

    text: str
    token_ids: list[int]


class ChatTemplate:
    """One model's compiled chat template, with the model's special token strings."""

    def __init__(self, source: str, *, bos_token: str | None = None, eos_token: str | None = None,
                 extra_tokens: Mapping[str, str | None] | None = None) -> None:
        self.source = source
        self._tokens = {"bos_token": bos_token or "", "eos_token": eos_token or "", **(extra_tokens or {})}
        try:
            self._template = _ENV.from_string(source)
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(f"the chat template does not compile: {exc}") from None

    @classmethod
    def for_tokenizer(cls, tokenizer: Tokenizer, *, override: str | None = None,
                      architecture: str | None = None) -> ChatTemplate:
        """The model's template: the catalog `override` if any, else the tokenizer's own, else
        `default_template_for(architecture)`."""
        source = override or tokenizer.chat_template or default_template_for(architecture)

        def text(token_id: int | None) -> str | None:
            return tokenizer.id_to_token(token_id) if token_id is not None else None

        return cls(source, bos_token=text(tokenizer.bos_token_id), eos_token=text(tokenizer.eos_token_id),
                   extra_tokens={"pad_token": text(tokenizer.pad_token_id)})

    def render(self, messages: Sequence[Mapping[str, Any]], *, tools: Sequence[Mapping[str, Any]] | None = None,
               add_generation_prompt: bool = True, **kwargs: Any) -> str:
        """The prompt text, exactly as transformers' `apply_chat_template(tokenize=False)` gives it."""
        context = {
            **kwargs, **self._tokens, "messages": normalize_messages(messages),
            "tools": [dict(t) for t in tools] if tools else None, "documents": None,
            "add_generation_prompt": add_generation_prompt,
        }
        try:
            chunks: list[str] = []
            size = 0
            for chunk in self._template.generate(**context):
                size += len(chunk)
                if size > MAX_RENDERED_CHARS:
                    raise ChatTemplateError("the rendered chat is too long")
                chunks.append(chunk)
        except jinja2.exceptions.SecurityError as exc:
            raise ChatTemplateError(f"the chat template tried an unsafe operation: {exc}") from None
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(f"the chat template failed: {exc}") from None
        except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
            if isinstance(exc, ChatTemplateError):
                raise
            raise ChatTemplateError(f"the chat template failed: {type(exc).__name__}: {exc}") from None
        return "".join(chunks)

    def render_ids(self, tokenizer: Tokenizer, messages: Sequence[Mapping[str, Any]], *,
                   tools: Sequence[Mapping[str, Any]] | None = None, add_generation_prompt: bool = True,
                   **kwargs: Any) -> RenderedPrompt:
        """Render and tokenize: the template's markers are control tokens, message and tool text
        is plain text even where it spells a special token."""
        shield = _Shield(tokenizer.special_tokens, (messages, tools))
        text = self.render(shield.protect(normalize_messages(messages)), tools=shield.protect(tools),
                           add_generation_prompt=add_generation_prompt, **kwargs)
        ids = tokenizer.encode_prompt(text, restore=shield.restore)
        return RenderedPrompt(shield.restore(text), ids)


def normalize_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Plain dict copies: content given as parts is joined to text; tool-call arguments given as a
    JSON string become an object (templates apply `tojson` to them)."""
    out = []
    for message in messages:
        if not isinstance(message, Mapping):
            raise ChatTemplateError("each message must be an object")
        item = dict(message)
        if isinstance(item.get("content"), list):
            item["content"] = _join_parts(item["content"])
        if isinstance(item.get("tool_calls"), list):
            item["tool_calls"] = [_decode_arguments(call) for call in item["tool_calls"]]
        reasoning = next((item[k] for k in _REASONING_FIELDS if item.get(k) is not None), None)
        if reasoning is not None:  # templates read `reasoning_content` (gpt-oss: `thinking`), as in HF
            item = {"thinking": reasoning, **item, "reasoning_content": reasoning}
        out.append(item)
    return out


def _join_parts(parts: list[Any]) -> str:
    texts = []
    for part in parts:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, Mapping) and part.get("type") in ("text", "input_text", None) and "text" in part:
            texts.append(str(part["text"]))
        else:
            kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
            raise ChatTemplateError(f"message content part of type {kind!r} is not supported")
    return "\n".join(texts)


def _decode_arguments(call: Any) -> Any:
    if not isinstance(call, Mapping) or not isinstance(call.get("function"), Mapping):
        return call
    function = dict(call["function"])
    if isinstance(function.get("arguments"), str):
        try:
            parsed = json.loads(function["arguments"])
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            function["arguments"] = parsed
    return {**call, "function": function}


class _Shield:
    """Swaps special-token strings in untrusted values for placeholders no text can contain."""

    def __init__(self, markers: Sequence[str], values: Any) -> None:
        self._markers = sorted((m for m in markers if m), key=len, reverse=True)
        self._find = re.compile("|".join(map(re.escape, self._markers))) if self._markers else None
        index = {m: i for i, m in enumerate(self._markers)}
        nonce = str(secrets.randbelow(10**12))
        while nonce in json.dumps(values, default=str, ensure_ascii=False):
            nonce = str(secrets.randbelow(10**12))
        self._open, self._close = f"\ue000{nonce}:", "\ue001"
        self._placeholder = {m: f"{self._open}{i}{self._close}" for m, i in index.items()}
        self._restore_re = re.compile(re.escape(self._open) + r"(\d+)" + re.escape(self._close))

    def protect(self, value: Any) -> Any:
        if self._find is None:
            return value
        if isinstance(value, str):
            return self._find.sub(lambda m: self._placeholder[m.group()], value)
        if isinstance(value, Mapping):
            return {self.protect(k): self.protect(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.protect(v) for v in value]
        return value

    def restore(self, text: str) -> str:
        if self._find is None or self._open not in text:
            return text
        return self._restore_re.sub(lambda m: self._markers[int(m.group(1))], text)
