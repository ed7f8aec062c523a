"""Hermes tool-call parsing: complete and streamed (split at every point) agree; markup never leaks."""

from __future__ import annotations

import itertools
import json

import pytest

from jongleur.tokenizer.tool_calls import HermesToolParser, ParsedOutput, tool_parser_for

CALL_A = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "°C"}}\n</tool_call>'
CALL_B = '<tool_call>\n{"name": "search", "arguments": {"q": "<tool_call> inside a string 🎉"}}\n</tool_call>'
CASES = {
    "plain": ("Just text, no calls. <tool but not a tag", "Just text, no calls. <tool but not a tag", []),
    "one_call": (CALL_A, "", [("get_weather", {"city": "Paris", "unit": "°C"})]),
    "two_calls": (CALL_A + "\n" + CALL_B, "", [
        ("get_weather", {"city": "Paris", "unit": "°C"}),
        ("search", {"q": "<tool_call> inside a string 🎉"}),
    ]),
    "content_around": ("Let me check.\n" + CALL_A + "\n\nDone.  ", "Let me check.\nDone.  ",
                       [("get_weather", {"city": "Paris", "unit": "°C"})]),
    "malformed": ("a <tool_call>\n{not json}\n</tool_call> b", "a <tool_call>\n{not json}\n</tool_call> b", []),
    "no_name": ('<tool_call>{"arguments": {}}</tool_call>', '<tool_call>{"arguments": {}}</tool_call>', []),
    "unterminated_valid": ('<tool_call>\n{"name": "f", "arguments": {}}', "", [("f", {})]),
    "unterminated_broken": ('x <tool_call>\n{"name": "f", "argu', 'x <tool_call>\n{"name": "f", "argu', []),
    "string_arguments": ('<tool_call>{"name": "f", "arguments": "{\\"a\\": 1}"}</tool_call>', "", [("f", {"a": 1})]),
    "partial_tag_at_end": ("text <tool_ca", "text <tool_ca", []),
    "whitespace_only": ("  \n ", "  \n ", []),
}


def _summary(result: ParsedOutput) -> tuple[str, list[tuple[str, object]]]:
    return result.content, [(c.name, json.loads(c.arguments)) for c in result.tool_calls]


@pytest.mark.parametrize("name", sorted(CASES))
def test_parse_complete(name: str) -> None:
    text, content, calls = CASES[name]
    result = HermesToolParser().parse(text)
    assert _summary(result) == (content, calls)
    assert all(c.id.startswith("call_") for c in result.tool_calls)
    assert len({c.id for c in result.tool_calls}) == len(result.tool_calls)


def _stream(text: str, cuts: list[int]) -> tuple[str, list[tuple[str, object]], list[str]]:
    stream = HermesToolParser().stream()
    pieces, content, calls = [], "", {}
    bounds = [0, *cuts, len(text)]
    deltas = [stream.feed(text[a:b]) for a, b in itertools.pairwise(bounds)] + [stream.finish()]
    for delta in deltas:
        pieces.append(delta.content)
        content += delta.content
        for call in delta.tool_calls:
            entry = calls.setdefault(call.index, {"name": "", "arguments": ""})
            entry["name"] += call.name or ""
            entry["arguments"] += call.arguments
    ordered = [(calls[i]["name"], json.loads(calls[i]["arguments"])) for i in sorted(calls)]
    return content, ordered, pieces


@pytest.mark.parametrize("name", sorted(CASES))
def test_streaming_split_at_every_point_matches(name: str) -> None:
    text, content, calls = CASES[name]
    for cut in range(len(text) + 1):
        got_content, got_calls, _ = _stream(text, [cut])
        assert (got_content, got_calls) == (content, calls), cut
    got_content, got_calls, _ = _stream(text, list(range(1, len(text))))  # one character at a time
    assert (got_content, got_calls) == (content, calls)


def test_markup_never_leaks_into_streamed_content() -> None:
    text = "Sure." + CALL_A + CALL_B + "ok"
    _, _, pieces = _stream(text, list(range(1, len(text))))
    streamed = "".join(pieces)
    assert "<tool" not in streamed and "tool_call>" not in streamed and streamed == "Sure.\nok"


def test_openai_delta_shape_and_registry() -> None:
    stream = tool_parser_for("qwen2").stream()
    delta = stream.feed(CALL_A)
    [call] = delta.tool_calls
    shaped = call.to_openai()
    assert shaped["index"] == 0 and shaped["type"] == "function" and shaped["id"].startswith("call_")
    assert shaped["function"]["name"] == "get_weather"
    assert json.loads(shaped["function"]["arguments"]) == {"city": "Paris", "unit": "°C"}
    assert tool_parser_for(None).name == "hermes"
    with pytest.raises(ValueError, match="unknown tool parser"):
        tool_parser_for(parser="nope")


def test_hostile_bodies_do_not_crash() -> None:
    deep = "<tool_call>" + "[" * 100_000 + "</tool_call>"
    assert HermesToolParser().parse(deep).content == deep
    long_body = "<tool_call>" + "x" * 200_000
    assert HermesToolParser().parse(long_body).content == long_body


def test_long_streamed_call_body_is_linear() -> None:
    import time

    args = json.dumps({"data": "y" * 300_000})
    text = '<tool_call>{"name": "big", "arguments": ' + args + "}</tool_call>"
    stream = HermesToolParser().stream()
    start = time.perf_counter()
    calls = [c for i in range(0, len(text), 4) for c in stream.feed(text[i:i + 4]).tool_calls]
    calls += stream.finish().tool_calls
    assert time.perf_counter() - start < 5.0
    assert [c.name for c in calls] == ["big"] and json.loads(calls[0].arguments) == json.loads(args)


BARE = '  {"name": "get_weather", "arguments": {"city": "Paris"}}\n'
BARE_CASES = {  # text -> (content, calls) for a parser offered the tool "get_weather"
    "bare_call": (BARE, "", [("get_weather", {"city": "Paris"})]),
    "bare_unknown_tool": ('{"name": "other", "arguments": {}}', '{"name": "other", "arguments": {}}', []),
    "bare_not_a_call": ('{"answer": 42}', '{"answer": 42}', []),
    "bare_with_text_after": (BARE + "ok", BARE + "ok", []),
    "text_then_json": ('Here: {"name": "get_weather", "arguments": {}}',
                       'Here: {"name": "get_weather", "arguments": {}}', []),
    "tagged_still_works": ("Sure." + CALL_A, "Sure.", [("get_weather", {"city": "Paris", "unit": "°C"})]),
    "json_then_tagged": ('{"x": 1}' + CALL_A, '{"x": 1}', [("get_weather", {"city": "Paris", "unit": "°C"})]),
    "whitespace_only": ("  \n ", "  \n ", []),
}


@pytest.mark.parametrize("name", sorted(BARE_CASES))
def test_bare_json_call_complete_and_streamed(name: str) -> None:
    """Small models (Qwen2.5 0.5B) often drop the tags: a reply that is only a call to an offered tool
    is a call; any other JSON or text stays content."""
    text, content, calls = BARE_CASES[name]
    parser = tool_parser_for("qwen2", bare_names=frozenset({"get_weather"}))
    assert _summary(parser.parse(text)) == (content, calls)
    for cuts in ([], [1], [len(text) // 2], list(range(1, len(text)))):
        stream = parser.stream()
        deltas = [stream.feed(text[a:b]) for a, b in itertools.pairwise([0, *cuts, len(text)])] + [stream.finish()]
        got_calls = [(c.name, json.loads(c.arguments)) for d in deltas for c in d.tool_calls]
        assert ("".join(d.content for d in deltas), got_calls) == (content, calls), cuts


def test_bare_json_needs_offered_tools() -> None:
    assert _summary(HermesToolParser().parse(BARE)) == (BARE, [])


def test_complete_call_openai_shape() -> None:
    [call] = HermesToolParser().parse(CALL_A).tool_calls
    shaped = call.to_openai()
    assert shaped["id"] == call.id and shaped["type"] == "function"
    assert shaped["function"] == {"name": "get_weather", "arguments": call.arguments}
