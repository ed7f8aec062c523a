"""Streaming stop-string matching: an Aho-Corasick automaton fed one character at a time.

Work per generated character is amortised O(1) whatever the number or length of stop strings, and
the automaton's state depth is exactly how many trailing characters could still begin a stop string,
which is what the detokenizer must hold back from the client.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from jongleur.engine.errors import InvalidRequestError

# building costs ~4 us of CPU per character: these bound it to ~0.3 s per request
MAX_STOP_STRINGS = 4096
MAX_STOP_TOTAL_CHARS = 65_536


@dataclass(frozen=True)
class StopMatch:
    """A stop string found in the text: it spans [start, end)."""

    stop: str
    start: int
    end: int


class StopAutomaton:
    """Immutable matcher for a set of stop strings; share it between sequences of one request.
    Too many or too long stop strings raise `InvalidRequestError(param="stop")`."""

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(dict.fromkeys(s for s in stops if s))
        if len(self.stops) > MAX_STOP_STRINGS:
            raise InvalidRequestError(f"at most {MAX_STOP_STRINGS} stop strings are allowed", param="stop")
        if sum(map(len, self.stops)) > MAX_STOP_TOTAL_CHARS:
            raise InvalidRequestError(
                f"stop strings may total at most {MAX_STOP_TOTAL_CHARS} characters", param="stop"
            )
        self._goto: list[dict[str, int]] = [{}]
        self._fail: list[int] = [0]
        self._depth: list[int] = [0]
        # the longest stop string ending at this state (itself or through failure links), or None
        self._out: list[str | None] = [None]
        for stop in self.stops:
            self._insert(stop)
        self._link()

    @property
    def max_len(self) -> int:
        return max((len(s) for s in self.stops), default=0)

    def _insert(self, stop: str) -> None:
        state = 0
        for ch in stop:
            nxt = self._goto[state].get(ch)
            if nxt is None:
                nxt = len(self._goto)
                self._goto.append({})
                self._fail.append(0)
                self._depth.append(self._depth[state] + 1)
                self._out.append(None)
                self._goto[state][ch] = nxt
            state = nxt
        self._out[state] = stop

    def _link(self) -> None:
        queue = deque(self._goto[0].values())
        while queue:
            state = queue.popleft()
            for ch, nxt in self._goto[state].items():
                fail = self._fail[state]
                while fail and ch not in self._goto[fail]:
                    fail = self._fail[fail]
                target = self._goto[fail].get(ch, 0)
                self._fail[nxt] = target if target != nxt else 0
                if self._out[nxt] is None:
                    self._out[nxt] = self._out[self._fail[nxt]]
                queue.append(nxt)

    def step(self, state: int, ch: str) -> int:
        while state and ch not in self._goto[state]:
            state = self._fail[state]
        return self._goto[state].get(ch, 0)

    def depth(self, state: int) -> int:
        return self._depth[state]

    def output(self, state: int) -> str | None:
        return self._out[state]


class StopScanner:
    """Per-sequence matching state over a text that arrives in chunks."""

    def __init__(self, automaton: StopAutomaton) -> None:
        self.automaton = automaton
        self._state = 0
        self._scanned = 0  # characters fed so far

    def feed(self, chunk: str) -> StopMatch | None:
        """Scan the next chunk; the earliest-ending stop string (longest on ties), with positions
        counted from the start of everything fed. Characters after a match are not consumed."""
        auto = self.automaton
        state = self._state
        for offset, ch in enumerate(chunk):
            state = auto.step(state, ch)
            stop = auto.output(state)
            if stop is not None:
                end = self._scanned + offset + 1
                self._state, self._scanned = state, end
                return StopMatch(stop, end - len(stop), end)
        self._state = state
        self._scanned += len(chunk)
        return None

    @property
    def pending(self) -> int:
        """How many trailing characters could still be the start of a stop string."""
        return self.automaton.depth(self._state)
