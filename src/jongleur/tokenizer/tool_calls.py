"""Tool calls in model output: complete and streaming parsers, selectable by model family.

Hermes style (Qwen2.5, Hermes, many fine-tunes) writes each call as
`<tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>`. The streaming parser never lets the
markup reach content: text that might begin a `<tool_call>` tag is held, a call is emitted once its
closing tag (or the end of output) arrives, with its arguments in one fragment. A block whose JSON
is malformed is returned as plain content, markup included. `parse()` runs the streaming parser over
the whole text, so both paths always agree.

Content rules: whitespace touching a tool call is dropped, and the content pieces between calls
are joined with "\n".

Bare calls: small models (Qwen2.5 0.5B) often drop the tags and reply with nothing but
`{"name": ..., "arguments": {...}}`. A parser built with `bare_names` accepts such a reply as one
call when the name is one of the offered tools; while streaming, a reply that opens with "{" is
then held back whole until the end, since only then is it known to be a call or content.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ToolCall:
    """One complete call; `arguments` is JSON text (an object), as the OpenAI API carries it."""

    id: str
    name: str
    arguments: str

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's `message.tool_calls[]` entry."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ToolCallDelta:
    """A streamed piece of call `index` (OpenAI's `choices[].delta.tool_calls[]`)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""

    def to_openai(self) -> dict[str, Any]:
        function: dict[str, Any] = {"arguments": self.arguments}
        if self.name is not None:
            function["name"] = self.name
        out: dict[str, Any] = {"index": self.index, "function": function}
        if self.id is not None:
            out.update(id=self.id, type="function")
        return out


@dataclass(frozen=True)
class ToolStreamDelta:
    """What one chunk of model text turned into."""

    content: str = ""
    tool_calls: tuple[ToolCallDelta, ...] = ()


@dataclass(frozen=True)
class ParsedOutput:
    """A complete output: the plain content and the tool calls found in it."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)


class StreamingToolParser(Protocol):
    def feed(self, text: str) -> ToolStreamDelta: ...

    def finish(self) -> ToolStreamDelta: ...


class ToolParser(Protocol):
    """A family's tool-call format: one instance per model, `stream()` per generated sequence."""

    name: str

    def parse(self, text: str) -> ParsedOutput: ...

    def stream(self) -> StreamingToolParser: ...


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def parse_call_json(body: str) -> tuple[str, str] | None:
    """`(name, arguments JSON)` from `{"name": ..., "arguments": {...}}`, or None if malformed."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(arguments, str):  # some models emit the arguments already encoded
        try:
            arguments = json.loads(arguments)
        except (ValueError, RecursionError):
            return None
    if not isinstance(arguments, dict):
        return None
    return obj["name"], json.dumps(arguments, ensure_ascii=False)


def parse_bare_call(text: str, tool_names: frozenset[str]) -> tuple[str, str] | None:
    """`(name, arguments JSON)` if the whole of `text` is an untagged call to one of `tool_names`."""
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return None
    parsed = parse_call_json(stripped)
    return parsed if parsed is not None and parsed[0] in tool_names else None


def _partial_suffix(text: str, tag: str) -> int:
    """Length of the longest end of `text` that is a proper beginning of `tag`."""
    for n in range(min(len(tag) - 1, len(text)), 0, -1):
        if text.endswith(tag[:n]):
            return n
    return 0


class TaggedCallStream:
    """Streaming parser for calls wrapped in start/end tags with a JSON body (hermes and kin).

    With `bare_names`, a reply that is only an untagged call to one of those tools counts too.
    """

    def __init__(self, start: str, end: str, bare_names: frozenset[str] = frozenset()) -> None:
        self._start, self._end = start, end
        self._bare_names = bare_names
        # reply opening held back while it may be a bare call: None once decided it is not
        self._bare_held: str | None = "" if bare_names else None
        self._bare_open = False  # the held reply opened with "{": hold all of it
        self._buf = ""
        self._in_call = False
        self._body: list[str] = []  # a call body seen so far, less the tail kept in `_buf`
        self._held_ws = ""  # trailing whitespace of content, dropped if a call follows
        self._after_call = False  # the current content piece follows a call
        self._piece_started = False  # the current content piece has emitted text
        self._emitted_any = False
        self._index = 0
        self._content: list[str] = []
        self._calls: list[ToolCallDelta] = []

    def feed(self, text: str) -> ToolStreamDelta:
        if self._bare_held is not None:
            self._bare_held += text
            head = self._bare_held.lstrip()
            if self._bare_open or not head:
                return ToolStreamDelta()
            if head.startswith("{"):
                self._bare_open = True
                return ToolStreamDelta()
            text, self._bare_held = self._bare_held, None
        self._buf += text
        while self._step():
            pass
        return self._take()

    def finish(self) -> ToolStreamDelta:
        if self._bare_held is not None:
            return self._finish_held(self._bare_held)
        if self._in_call:
            self._close_call("".join(self._body) + self._buf, terminated=False)
        else:
            self._add_content(self._buf)
        self._buf = ""
        self._in_call = False
        if self._held_ws and not (self._after_call and not self._piece_started):
            self._emit(self._held_ws)
        self._held_ws = ""
        return self._take()

    def _finish_held(self, text: str) -> ToolStreamDelta:
        """The whole reply was held: tagged calls if any, else a bare call, else plain content."""
        self._bare_held = None
        tagged = TaggedCallStream(self._start, self._end)
        first, last = tagged.feed(text), tagged.finish()
        if first.tool_calls or last.tool_calls:
            return ToolStreamDelta(first.content + last.content, first.tool_calls + last.tool_calls)
        bare = parse_bare_call(text, self._bare_names)
        if bare is None:
            return ToolStreamDelta(first.content + last.content)
        return ToolStreamDelta("", (ToolCallDelta(0, new_call_id(), *bare),))

    def _step(self) -> bool:
        """Consume what can be decided now; True if more may be decidable."""
        if not self._in_call:
            pos = self._buf.find(self._start)
            if pos < 0:
                keep = _partial_suffix(self._buf, self._start)
                self._add_content(self._buf[: len(self._buf) - keep])
                self._buf = self._buf[len(self._buf) - keep:]
                return False
            self._add_content(self._buf[:pos])
            self._buf = self._buf[pos + len(self._start):]
            self._in_call, self._body = True, []
            return True
        pos = self._buf.find(self._end)
        if pos < 0:
            # park all but a possible partial end tag, so the buffer stays short on long bodies
            cut = max(0, len(self._buf) - len(self._end) + 1)
            self._body.append(self._buf[:cut])
            self._buf = self._buf[cut:]
            return False
        body = "".join(self._body) + self._buf[:pos]
        self._buf = self._buf[pos + len(self._end):]
        self._in_call, self._body = False, []
        self._close_call(body, terminated=True)
        return True

    def _close_call(self, body: str, terminated: bool) -> None:
        parsed = parse_call_json(body.strip())
        if parsed is None:  # malformed: the block is content, markup and all
            self._add_content(self._start + body + (self._end if terminated else ""))
            return
        name, arguments = parsed
        self._calls.append(ToolCallDelta(self._index, new_call_id(), name, arguments))
        self._index += 1
        self._held_ws = ""
        self._after_call, self._piece_started = True, False

    def _add_content(self, text: str) -> None:
        if not text:
            return
        combined = self._held_ws + text
        body = combined.rstrip()
        self._held_ws = combined[len(body):]
        if self._after_call and not self._piece_started:
            body = body.lstrip()
        if body:
            self._emit(body)

    def _emit(self, text: str) -> None:
        if not self._piece_started and self._after_call and self._emitted_any:
            text = "\n" + text
        self._content.append(text)
        self._piece_started = self._emitted_any = True

    def _take(self) -> ToolStreamDelta:
        out = ToolStreamDelta("".join(self._content), tuple(self._calls))
        self._content, self._calls = [], []
        return out


class HermesToolParser:
    """`<tool_call>{"name": ..., "arguments": {...}}</tool_call>` (Qwen2.5, Hermes)."""

    name = "hermes"
    start, end = "<tool_call>", "</tool_call>"

    def __init__(self, bare_names: frozenset[str] = frozenset()) -> None:
        self.bare_names = bare_names  # tools whose untagged call (a bare JSON reply) counts too

    def stream(self) -> TaggedCallStream:
        return TaggedCallStream(self.start, self.end, self.bare_names)

    def parse(self, text: str) -> ParsedOutput:
        stream = self.stream()
        first, last = stream.feed(text), stream.finish()
        calls = [ToolCall(d.id or new_call_id(), d.name or "", d.arguments) for d in first.tool_calls + last.tool_calls]
        return ParsedOutput(first.content + last.content, calls)


TOOL_PARSERS: dict[str, type[HermesToolParser]] = {"hermes": HermesToolParser}
# model family / architecture -> parser name
FAMILY_PARSERS = {"qwen": "hermes", "qwen2": "hermes", "qwen2.5": "hermes", "qwen3": "hermes", "hermes": "hermes"}
DEFAULT_PARSER = "hermes"


def tool_parser_for(
    family: str | None = None, *, parser: str | None = None, bare_names: frozenset[str] = frozenset()
) -> ToolParser:
    """The parser named `parser`, else the one registered for `family`, else hermes.

    `bare_names`: the offered tools; a reply that is only an untagged call to one of them is a call.
    """
    name = parser or FAMILY_PARSERS.get((family or "").lower(), DEFAULT_PARSER)
    if name not in TOOL_PARSERS:
        raise ValueError(f"unknown tool parser {name!r}; known: {sorted(TOOL_PARSERS)}")
    return TOOL_PARSERS[name](bare_names)
