"""Incremental detokenization of one sequence, with stop strings.

Feed generated token ids; get back the new text that is safe to send. Safe means:
- never part of a character: byte-level BPE and byte-fallback tokens split multibyte characters,
  so text is held while the decoded tail ends in U+FFFD (at most `_MAX_HELD_TOKENS` tokens, after
  which the replacement characters are let out, so a model emitting invalid bytes cannot stall it);
- never the beginning of a stop string: the stop automaton's depth says how many trailing
  characters could still begin one, and exactly those are held.
Cost per token is two decodes of a short window (vLLM's prefix/read offsets) plus O(1) amortised
stop matching per character, independent of the sequence length and the number of stop strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from jongleur.tokenizer.stop_strings import StopAutomaton, StopScanner
from jongleur.tokenizer.tokenizer import Tokenizer

_REPLACEMENT = "\ufffd"
_PROMPT_CONTEXT = 6  # prompt tokens decoded with the first outputs (leading-space rules need context)
_MAX_HELD_TOKENS = 8  # no character needs more than 4 bytes: beyond this the bytes are invalid


@dataclass(frozen=True)
class DetokenizerDelta:
    """New text to send; `finished` when a stop string matched (`stop` says which)."""

    text: str
    finished: bool = False
    stop: str | None = None


class IncrementalDetokenizer:
    """One sequence's detokenization state. Not thread-safe; one per sequence."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        prompt_ids: Sequence[int] = (),
        skip_special_tokens: bool = True,
        stop: StopAutomaton | Iterable[str] = (),
        include_stop_str_in_output: bool = False,
    ) -> None:
        self._tokenizer = tokenizer
        self._skip = skip_special_tokens
        self._ids: list[int] = list(prompt_ids[-_PROMPT_CONTEXT:])
        self._prefix_offset = 0
        self._read_offset = len(self._ids)
        automaton = stop if isinstance(stop, StopAutomaton) else StopAutomaton(stop)
        self._scanner = StopScanner(automaton) if automaton.stops else None
        self._include_stop = include_stop_str_in_output
        self._sent: list[str] = []  # text already returned (kept as parts: no quadratic concatenation)
        self._sent_len = 0
        self._pending = ""  # text decoded but not yet returned (a possible stop-string start)
        self.finished = False
        self.stop_reason: str | None = None

    @property
    def text(self) -> str:
        """All output text so far (cut at the stop string once one matched)."""
        return "".join(self._sent) + self._pending

    def add(self, token_ids: Iterable[int]) -> DetokenizerDelta:
        """Append generated tokens; the text now safe to send. After a stop match, returns empty."""
        if self.finished:
            return DetokenizerDelta("", True, self.stop_reason)
        for token_id in token_ids:
            self._ids.append(token_id)
            if (delta := self._append(self._decode_step(force=False))) is not None:
                return delta
        return DetokenizerDelta(self._release(final=False))

    def finish(self) -> DetokenizerDelta:
        """The sequence ended (EOS, length, abort): release everything held back."""
        if self.finished:
            return DetokenizerDelta("", True, self.stop_reason)
        if (delta := self._append(self._decode_step(force=True))) is not None:
            return delta
        self.finished = True
        return DetokenizerDelta(self._release(final=True), True, None)

    def _decode_step(self, force: bool) -> str:
        """Text added by the tokens past the read offset, or "" while a character is incomplete."""
        if self._read_offset == len(self._ids):
            return ""
        decode = self._tokenizer.decode
        window = self._ids[self._prefix_offset:]
        prefix = decode(window[: self._read_offset - self._prefix_offset], skip_special_tokens=self._skip)
        full = decode(window, skip_special_tokens=self._skip)
        held = len(self._ids) - self._read_offset
        if full.endswith(_REPLACEMENT) and not force and held < _MAX_HELD_TOKENS:
            return ""
        new = full[len(prefix):]
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        return new

    def _append(self, new: str) -> DetokenizerDelta | None:
        """Add decoded text; a final delta if it completes a stop string."""
        if not new:
            return None
        self._pending += new
        if self._scanner is None:
            return None
        match = self._scanner.feed(new)
        if match is None:
            return None
        # the stop string's first characters were held back, so it starts inside `_pending`
        cut = (match.end if self._include_stop else match.start) - self._sent_len
        out = self._pending[:cut]
        self._pending = ""
        self._send(out)
        self.finished, self.stop_reason = True, match.stop
        return DetokenizerDelta(out, True, match.stop)

    def _release(self, final: bool) -> str:
        held = 0 if final or self._scanner is None else self._scanner.pending
        keep = min(held, len(self._pending))
        out = self._pending[: len(self._pending) - keep]
        self._pending = self._pending[len(self._pending) - keep:]
        self._send(out)
        return out

    def _send(self, text: str) -> None:
        if text:
            self._sent.append(text)
            self._sent_len += len(text)
