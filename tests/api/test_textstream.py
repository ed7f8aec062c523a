"""Incremental detokenization with stop strings, and hermes tool-call parsing."""

from __future__ import annotations

from api.fakes import FakeTokenizer
from jongleur.api.textstream import TextStream
from jongleur.api.tool_calls import HermesStreamParser, parse_hermes

TOK = FakeTokenizer()


def run(text: str, stop: list[str], step: int = 1) -> tuple[list[str], TextStream]:
    ids = TOK.encode(text)
    ts = TextStream(TOK.decode, stop)
    out = [ts.push(ids[i:i + step]) for i in range(0, len(ids), step)]
    out.append(ts.finish())
    return out, ts


def test_multibyte_chunks_stay_valid() -> None:
    out, _ = run("héllo ✓ 日本", [])
    assert "".join(out) == "héllo ✓ 日本" and all("\ufffd" not in o for o in out)


def test_stop_string_cut_and_held_back() -> None:
    out, ts = run("Hello, world! STOP here", ["STOP"])
    assert "".join(out) == "Hello, world! " and ts.stopped and ts.matched_stop == "STOP"
    assert all("ST" not in o for o in out)
    out, ts = run("Hello ST", ["STOP"])
    assert "".join(out) == "Hello ST" and not ts.stopped


def test_hermes_parse_and_stream() -> None:
    text = 'Hi <tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>'
    content, calls = parse_hermes(text)
    assert content == "Hi" and calls[0].name == "f" and calls[0].arguments == '{"a": 1}'
    p = HermesStreamParser()
    content, calls = "", []
    for ch in text:
        c, k = p.push(ch)
        content, calls = content + c, calls + k
    assert content == "Hi " and [c.name for c in calls] == ["f"]
    assert parse_hermes("<tool_call>not json</tool_call>")[1] == []


def test_bare_json_call_streaming() -> None:
    p = HermesStreamParser({"f"})
    text = ' {"name": "f", "arguments": {"a": 1}}'
    outs = [p.push(ch) for ch in text]
    assert all(c == "" and not k for c, k in outs)
    content, calls = p.finish()
    assert content == "" and calls[0].name == "f"
    p = HermesStreamParser({"f"})
    content = "".join(p.push(ch)[0] for ch in '{"x": 1}')
    rest, calls = p.finish()
    assert content + rest == '{"x": 1}' and not calls
