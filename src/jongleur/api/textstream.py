"""Incremental detokenization of one choice, with stop strings.

Tokens arrive a few at a time; bytes of one character can be split across tokens, so text is
emitted only once it decodes without a trailing U+FFFD (every streamed chunk is valid UTF-8).
Text that could be the start of a stop string is held back until it is clear; on a match the
text is cut before the stop string and the stream stops.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

Decode = Callable[[Sequence[int]], str]


class TextStream:
    def __init__(self, decode: Decode, stop: Sequence[str] = ()) -> None:
        self._decode = decode
        self._stop = [s for s in stop if s]
        self._ids: list[int] = []
        self._prefix_offset = 0
        self._read_offset = 0
        self._text = ""  # all decoded text so far
        self._emitted = 0  # chars of _text already handed out
        self.stopped = False
        self.matched_stop: str | None = None

    @property
    def text(self) -> str:
        return self._text[: self._emitted] if self.stopped else self._text

    def push(self, token_ids: Sequence[int]) -> str:
        """Add tokens; return the new text that is safe to emit ('' if none yet)."""
        if self.stopped:
            return ""
        self._ids.extend(token_ids)
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        full = self._decode(self._ids[self._prefix_offset :])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            self._text += full[len(prefix) :]
            self._prefix_offset = self._read_offset
            self._read_offset = len(self._ids)
        return self._release(final=False)

    def finish(self) -> str:
        """The stream ended: flush what was held back (a trailing partial character included)."""
        if self.stopped:
            return ""
        rest = self._decode(self._ids[self._prefix_offset :])
        prefix = self._decode(self._ids[self._prefix_offset : self._read_offset])
        if len(rest) > len(prefix):
            self._text += rest[len(prefix) :]
            self._prefix_offset = self._read_offset = len(self._ids)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        if self._stop:
            longest = max(len(s) for s in self._stop)
            window_start = max(0, self._emitted - longest + 1)
            best: tuple[int, str] | None = None
            for s in self._stop:
                pos = self._text.find(s, window_start)
                if pos != -1 and (best is None or pos < best[0]):
                    best = (pos, s)
            if best is not None:
                pos, s = best
                out = self._text[self._emitted : pos]
                self._emitted = pos
                self.stopped = True
                self.matched_stop = s
                return out
            if not final:
                hold = 0
                for s in self._stop:
                    for k in range(min(len(s) - 1, len(self._text)), hold, -1):
                        if self._text.endswith(s[:k]):
                            hold = k
                            break
                end = max(self._emitted, len(self._text) - hold)
                out = self._text[self._emitted : end]
                self._emitted = end
                return out
        out = self._text[self._emitted :]
        self._emitted = len(self._text)
        return out
