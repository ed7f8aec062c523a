"""Tool calls in the hermes format (`<tool_call>{"name": ..., "arguments": {...}}</tool_call>`),
as Qwen 2.5 emits them, and the guided-decoding constraint that forces a call.

`tool_choice="required"` and a named choice are enforced with a JSON-schema constraint (the
approach vLLM documents): the model's output is then the call itself, as JSON — for a named
function its arguments object, for "required" a non-empty array of `{"name", "arguments"}`.
`auto` lets the model choose; its text is scanned for `<tool_call>` blocks, also while streaming.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from jongleur.engine.types import GuidedDecoding

OPEN, CLOSE = "<tool_call>", "</tool_call>"


@dataclass
class ParsedCall:
    name: str
    arguments: str  # JSON text

    def to_openai(self, index: int) -> dict[str, Any]:
        return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


def _call_from_json(text: str) -> ParsedCall | None:
    try:
        obj = json.loads(text)
    except ValueError:
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    return ParsedCall(obj["name"], args if isinstance(args, str) else json.dumps(args, ensure_ascii=False))


def parse_hermes(text: str) -> tuple[str, list[ParsedCall]]:
    """Split model output into (content before the calls, calls). Unparseable blocks stay content."""
    calls: list[ParsedCall] = []
    content_parts: list[str] = []
    pos = 0
    while True:
        start = text.find(OPEN, pos)
        if start == -1:
            content_parts.append(text[pos:])
            break
        end = text.find(CLOSE, start)
        body = text[start + len(OPEN): end if end != -1 else len(text)]
        call = _call_from_json(body.strip())
        if call is None:
            content_parts.append(text[pos:] if end == -1 else text[pos:end + len(CLOSE)])
            if end == -1:
                break
        else:
            content_parts.append(text[pos:start])
            calls.append(call)
        if end == -1:
            break
        pos = end + len(CLOSE)
    return "".join(content_parts).strip() if calls else "".join(content_parts), calls


def bare_call(text: str, tool_names: set[str]) -> list[ParsedCall]:
    """A reply that is nothing but `{"name": <a tool>, "arguments": {...}}` (models sometimes drop
    the tags) is a call too."""
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return []
    call = _call_from_json(stripped)
    return [call] if call is not None and call.name in tool_names else []


class HermesStreamParser:
    """Streaming: content is passed through until `<tool_call>` may begin; calls are emitted whole."""

    def __init__(self, tool_names: set[str] | None = None) -> None:
        self.buffer = ""
        self.in_call = False
        self.calls: list[ParsedCall] = []
        self.tool_names = tool_names or set()
        self.emitted_any = False
        self.bare = False  # the reply opened with "{": held back whole, it may be a bare call

    def push(self, text: str) -> tuple[str, list[ParsedCall]]:
        self.buffer += text
        if self.bare:
            return "", []
        if not self.emitted_any and self.tool_names:
            head = self.buffer.lstrip()
            if not head:
                return "", []
            if head.startswith("{"):
                self.bare = True
                return "", []
        content, calls = self._scan()
        self.emitted_any = self.emitted_any or bool(content) or bool(calls)
        return content, calls

    def _scan(self) -> tuple[str, list[ParsedCall]]:
        content = ""
        new_calls: list[ParsedCall] = []
        while True:
            if not self.in_call:
                start = self.buffer.find(OPEN)
                if start == -1:
                    hold = next((k for k in range(len(OPEN) - 1, 0, -1) if self.buffer.endswith(OPEN[:k])), 0)
                    content += self.buffer[: len(self.buffer) - hold]
                    self.buffer = self.buffer[len(self.buffer) - hold:]
                    return content, new_calls
                content += self.buffer[:start]
                self.buffer = self.buffer[start + len(OPEN):]
                self.in_call = True
            end = self.buffer.find(CLOSE)
            if end == -1:
                return content, new_calls
            call = _call_from_json(self.buffer[:end].strip())
            if call is not None:
                new_calls.append(call)
                self.calls.append(call)
            self.buffer = self.buffer[end + len(CLOSE):]
            self.in_call = False

    def finish(self) -> tuple[str, list[ParsedCall]]:
        if self.bare:
            text, self.buffer = self.buffer, ""
            content, calls = parse_hermes(text)
            if not calls:
                calls = bare_call(text, self.tool_names)
                content = "" if calls else text
            self.calls += calls
            return content, calls
        if self.in_call:
            call = _call_from_json(self.buffer.strip())
            self.buffer = ""
            self.in_call = False
            if call is not None:
                self.calls.append(call)
                return "", [call]
            return "", []
        rest, self.buffer = self.buffer, ""
        return rest, []


def forced_call_constraint(tools: list[dict[str, Any]], named: str | None) -> GuidedDecoding:
    """The JSON-schema constraint for tool_choice "required" (array of calls) or a named function."""
    def params_of(tool: dict[str, Any]) -> dict[str, Any]:
        return tool["function"].get("parameters") or {"type": "object"}

    if named is not None:
        tool = next(t for t in tools if t["function"]["name"] == named)
        return GuidedDecoding("json_schema", json.dumps(params_of(tool)))
    variants = [
        {"type": "object",
         "properties": {"name": {"const": t["function"]["name"]}, "arguments": params_of(t)},
         "required": ["name", "arguments"], "additionalProperties": False}
        for t in tools
    ]
    schema = {"type": "array", "minItems": 1, "items": {"anyOf": variants}}
    return GuidedDecoding("json_schema", json.dumps(schema))


def parse_forced(text: str, named: str | None) -> list[ParsedCall]:
    """Calls from constrained output (see `forced_call_constraint`)."""
    try:
        value = json.loads(text)
    except ValueError:
        return []
    if named is not None:
        return [ParsedCall(named, json.dumps(value, ensure_ascii=False))]
    calls = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            calls.append(ParsedCall(item["name"], json.dumps(item.get("arguments", {}), ensure_ascii=False)))
    return calls
