"""Detectors: bounded regexes plus checksum validation, so numbers that merely look alike pass.

Every pattern matches at most `MAX_MATCH` characters: `OutputGuard` relies on it to know how much
text to hold back in a stream.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

MAX_MATCH = 200


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(raw: str) -> bool:
    s = re.sub(r"\s", "", raw).upper()
    if not 15 <= len(s) <= 34:
        return False
    moved = s[4:] + s[:4]
    number = "".join(str(int(c, 36)) for c in moved)
    return int(number) % 97 == 1


def nir_ok(raw: str) -> bool:
    s = re.sub(r"\s", "", raw).upper()
    if len(s) != 15:
        return False
    body, key = s[:13], s[13:]
    body = body.replace("2A", "19").replace("2B", "18")  # Corsica: departments 2A/2B
    if not body.isdigit() or not key.isdigit():
        return False
    return 97 - int(body) % 97 == int(key)


def _card_ok(raw: str) -> bool:
    digits = re.sub(r"\D", "", raw)
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _phone_ok(raw: str) -> bool:
    return 9 <= len(re.sub(r"\D", "", raw)) <= 15


@dataclass(frozen=True)
class Detector:
    kind: str
    pattern: re.Pattern[str]
    valid: Callable[[str], bool] | None = None
    label: str = ""


PII: dict[str, Detector] = {d.kind: d for d in [
    Detector("iban", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b"), iban_ok, "[IBAN]"),
    Detector("card", re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])"), _card_ok, "[CARD]"),
    Detector("nir", re.compile(r"(?<!\d)[12] ?\d{2} ?\d{2} ?(?:\d{2}|2[ABab]) ?\d{3} ?\d{3} ?\d{2}(?!\d)"),
             nir_ok, "[NIR]"),
    Detector("email", re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){1,4}\b"),
             None, "[EMAIL]"),
    Detector("phone", re.compile(r"(?<![\w+])(?:\+|00)?\d{1,3}?[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,5}"
                                 r"(?![\w])"), _phone_ok, "[PHONE]"),
]}

SECRETS = Detector("secret", re.compile(
    r"(?:\bjl-[A-Za-z0-9_-]{43}"
    r"|\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,160}"
    r"|\bAKIA[0-9A-Z]{16}\b"
    r"|\bgh[pousr]_[A-Za-z0-9]{36,76}"
    r"|\bgithub_pat_[A-Za-z0-9_]{22,120}"
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,120}"
    r"|\bAIza[0-9A-Za-z_-]{35}"
    r"|-----BEGIN [A-Z ]{0,20}PRIVATE KEY-----"
    r"|\b(?i:api[_-]?key|secret|token|password|passwd)\b\s{0,3}[:=]\s{0,3}[\"']?[^\s\"']{8,120})"),
    None, "[SECRET]")

INJECTION = [re.compile(p, re.IGNORECASE) for p in (
    (r"\b(?:ignore|disregard|forget)\b.{0,40}\b(?:previous|prior|above|earlier|all)\b.{0,20}"
    r"\b(?:instructions?|prompts?|rules|context)\b"),
    r"\b(?:reveal|print|show|repeat|leak)\b.{0,30}\b(?:system prompt|hidden (?:prompt|instructions)|your instructions)\b",
    r"\byou are now\b.{0,40}\b(?:dan|jailbroken|unrestricted|developer mode)\b",
    r"\b(?:developer|god|jailbreak|dan) mode\b",
    r"<\|im_start\|>\s*system|\[/?INST\]|<<SYS>>",
    r"\bdo anything now\b",
)]


@dataclass(frozen=True)
class Match:
    kind: str
    start: int
    end: int
    label: str


def find_all(text: str, detectors: list[Detector]) -> list[Match]:
    """Non-overlapping matches, earlier detectors winning overlaps (IBAN before card before phone)."""
    taken: list[Match] = []
    for det in detectors:
        for m in det.pattern.finditer(text):
            if det.valid is not None and not det.valid(m.group()):
                continue
            if any(m.start() < t.end and t.start < m.end() for t in taken):
                continue
            taken.append(Match(det.kind, m.start(), m.end(), det.label))
    return sorted(taken, key=lambda t: t.start)


def replace(text: str, matches: list[Match]) -> str:
    out, pos = [], 0
    for m in matches:
        out.append(text[pos:m.start])
        out.append(m.label)
        pos = m.end
    out.append(text[pos:])
    return "".join(out)


def injection_hits(text: str) -> int:
    return sum(1 for p in INJECTION if p.search(text))
