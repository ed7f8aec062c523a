"""Forced tool calls: the JSON-schema constraint and parsing of the constrained output."""

from __future__ import annotations

import json

from jongleur.api.tool_choice import forced_call_constraint, parse_forced

TOOLS = [{"type": "function", "function": {"name": "ping", "parameters": {
    "type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}}},
    {"type": "function", "function": {"name": "pong"}}]


def test_required_is_an_array_of_offered_calls() -> None:
    guided = forced_call_constraint(TOOLS, None)
    schema = json.loads(guided.spec)
    assert guided.kind == "json_schema" and schema["type"] == "array" and schema["minItems"] == 1
    assert [v["properties"]["name"]["const"] for v in schema["items"]["anyOf"]] == ["ping", "pong"]
    calls = parse_forced('[{"name": "ping", "arguments": {"n": 3}}, {"name": "pong", "arguments": {}}]', None)
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("ping", {"n": 3}), ("pong", {})]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)


def test_named_is_the_arguments_object() -> None:
    assert json.loads(forced_call_constraint(TOOLS, "ping").spec)["required"] == ["n"]
    assert json.loads(forced_call_constraint(TOOLS, "pong").spec) == {"type": "object"}
    [call] = parse_forced('{"n": 1}', "ping")
    assert call.name == "ping" and json.loads(call.arguments) == {"n": 1}


def test_truncated_output_is_no_call() -> None:
    assert parse_forced('[{"name": "ping", "argu', None) == []
    assert parse_forced("[" * 100_000, None) == []
