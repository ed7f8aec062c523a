"""Forced tool calls: `tool_choice="required"` or a named function, enforced by guided decoding.

The constraint is a JSON schema (the approach vLLM documents): the model's output is then the call
itself, as JSON — for a named function its arguments object, for "required" a non-empty array of
`{"name", "arguments"}`. `tool_choice="auto"` needs no constraint: its text goes through the model's
tool parser (`jongleur.tokenizer.tool_parser_for`).
"""

from __future__ import annotations

import json
from typing import Any

from jongleur.engine.types import GuidedDecoding
from jongleur.tokenizer.tool_calls import ToolCall, new_call_id


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


def parse_forced(text: str, named: str | None) -> list[ToolCall]:
    """Calls from constrained output (see `forced_call_constraint`)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return []
    if named is not None:
        return [ToolCall(new_call_id(), named, json.dumps(value, ensure_ascii=False))]
    calls = []
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            arguments = json.dumps(item.get("arguments", {}), ensure_ascii=False)
            calls.append(ToolCall(new_call_id(), item["name"], arguments))
    return calls
