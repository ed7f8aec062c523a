"""The input check and the (streaming) output filter.

`OutputGuard` holds back the tail of a stream that could still become (or extend) a match: the
`regex` module's partial matching tells where such a tail starts, so ordinary text flows at once
and only, say, a trailing word that could begin an e-mail address or a key waits for the next
chunk. Every detector matches at most `detectors.MAX_MATCH` characters, so no more than `HOLD_BACK`
characters are ever held, and text is only released up to a point no match straddles. A secret
split across any number of chunks therefore never leaves in clear.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass
from functools import cache

import regex

from jongleur.guard import detectors
from jongleur.guard.detectors import Detector, Match
from jongleur.guard.policy import GuardPolicy

HOLD_BACK = detectors.MAX_MATCH + 8
_CONTEXT = 8  # already-released characters kept so look-behinds see what came before


@dataclass(frozen=True)
class Finding:
    stage: str  # "input" or "output"
    kind: str  # email, phone, iban, card, nir, secret, injection, deny_pattern, size
    action: str  # redacted, flagged, blocked
    count: int = 1

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class GuardBlocked(Exception):
    """Input refused by policy (deny pattern, size, injection with `block`): a 400 for the client."""

    def __init__(self, finding: Finding, message: str) -> None:
        super().__init__(message)
        self.finding = finding
        self.message = message


def _detectors(policy: GuardPolicy, action: str, secrets: bool) -> list[tuple[Detector, bool]]:
    """(detector, redact?) for the active ones; secrets first, then PII in `PII` order."""
    out: list[tuple[Detector, bool]] = []
    if secrets:
        out.append((detectors.SECRETS, True))
    if action != "off":
        out += [(d, action == "redact") for k, d in detectors.PII.items() if k in policy.pii_kinds]
    return out


def _scan(text: str, active: list[tuple[Detector, bool]]) -> tuple[list[Match], list[Match]]:
    """(matches to redact, matches to flag only)."""
    matches = detectors.find_all(text, [d for d, _ in active])
    redact_kinds = {d.kind for d, r in active if r}
    return [m for m in matches if m.kind in redact_kinds], [m for m in matches if m.kind not in redact_kinds]


@cache
def _partial_pattern(pattern: str, flags: int) -> regex.Pattern[str]:
    return regex.compile(pattern, flags)


def _growing_from(text: str, active: list[tuple[Detector, bool]]) -> int:
    """Where the earliest match that more text could still extend starts (`len(text)` if none):
    a partial match at the end, or a complete one that ends at the end."""
    start = len(text)
    for detector, _ in active:
        for m in _partial_pattern(detector.pattern.pattern, detector.pattern.flags).finditer(text, partial=True):
            if m.end() == len(text):
                start = min(start, m.start())
    return start


def _findings(stage: str, redacted: Counter[str], flagged: Counter[str]) -> list[Finding]:
    return ([Finding(stage, k, "redacted", n) for k, n in sorted(redacted.items())]
            + [Finding(stage, k, "flagged", n) for k, n in sorted(flagged.items())])


def check_input(text: str, policy: GuardPolicy) -> tuple[str, list[Finding]]:
    """Size, deny patterns, injection heuristics, PII. Returns the (redacted) text and findings."""
    if policy.max_input_chars is not None and len(text) > policy.max_input_chars:
        raise GuardBlocked(Finding("input", "size", "blocked"),
                           f"input longer than this key's limit of {policy.max_input_chars} characters")
    for pattern in policy.deny_patterns:
        if re.search(pattern, text):
            raise GuardBlocked(Finding("input", "deny_pattern", "blocked"), "input refused by content policy")
    findings: list[Finding] = []
    if policy.injection != "off":
        hits = detectors.injection_hits(text)
        if hits and policy.injection == "block":
            raise GuardBlocked(Finding("input", "injection", "blocked", hits), "input refused by content policy")
        if hits:
            findings.append(Finding("input", "injection", "flagged", hits))
    active = _detectors(policy, policy.pii_input, secrets=False)
    if active:
        redact, flag = _scan(text, active)
        text = detectors.replace(text, redact)
        findings += _findings("input", Counter(m.kind for m in redact), Counter(m.kind for m in flag))
    return text, findings


def check_output(text: str, policy: GuardPolicy) -> tuple[str, list[Finding]]:
    guard = OutputGuard(policy)
    out = guard.push(text) + guard.finish()
    return out, guard.findings()


class OutputGuard:
    """Filters one output stream: `push(chunk) -> releasable text`, `finish() -> the rest`."""

    def __init__(self, policy: GuardPolicy) -> None:
        self._active = _detectors(policy, policy.pii_output, secrets=policy.mask_secrets)
        self._buf = ""  # not yet released
        self._ctx = ""  # last released characters (context for look-behinds only)
        self._redacted: Counter[str] = Counter()
        self._flagged: Counter[str] = Counter()

    @property
    def active(self) -> bool:
        return bool(self._active)

    def push(self, chunk: str) -> str:
        if not self._active:
            return chunk
        self._buf += chunk
        growing = _growing_from(self._ctx + self._buf, self._active) - len(self._ctx)
        cut = max(min(growing, len(self._buf)), len(self._buf) - HOLD_BACK)
        return self._release(cut) if cut > 0 else ""

    def finish(self) -> str:
        if not self._active:
            return ""
        return self._release(len(self._buf))

    def _release(self, cut: int) -> str:
        text = self._ctx + self._buf
        off = len(self._ctx)
        cut += off
        redact, flag = _scan(text, self._active)
        redact = [m for m in redact if m.start >= off]
        flag = [m for m in flag if m.start >= off]
        for m in redact + flag:  # never cut through a match: release up to its start instead
            if m.start < cut < m.end:
                cut = m.start
        done = [m for m in redact if m.end <= cut]
        self._redacted.update(m.kind for m in done)
        self._flagged.update(m.kind for m in flag if m.end <= cut)
        shifted = [Match(m.kind, m.start - off, m.end - off, m.label) for m in done]
        out = detectors.replace(self._buf[: cut - off], shifted)
        self._ctx = text[max(off, cut - _CONTEXT):cut] if cut > off else self._ctx
        self._buf = self._buf[cut - off:]
        return out

    def findings(self) -> list[Finding]:
        return _findings("output", self._redacted, self._flagged)
