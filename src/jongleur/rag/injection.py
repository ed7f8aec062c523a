"""Retrieved text is data: flag passages that try to instruct the model (prompt injection).

A heuristic detector, run at ingestion (the flag is stored with the chunk) and reported with every
citation. Flagged passages are still retrievable (the document may legitimately discuss such
text), but the augmented prompt fences them as untrusted and tells the model never to follow
instructions found in sources. The guardrail package may replace `find_injection`.
"""

from __future__ import annotations

import re

_PATTERNS = [
    (r"\b(ignore|disregard|forget|override)\b.{0,40}\b(previous|prior|above|earlier|all|any|the)\b.{0,30}"
    r"\b(instructions?|prompts?|rules|directions)\b"),
    r"\byou are now\b|\bact as (?:an?|the)\b.{0,40}\b(unrestricted|jailbroken|dan)\b",
    r"\b(system|developer) (prompt|message|instructions?)\b",
    r"\bdo not (tell|inform|reveal to) the user\b",
    r"\b(new|updated) instructions?\s*:",
    r"<\|im_start\|>|<\|im_end\|>|<\|system\|>|\[/?INST\]|<<SYS>>|</?tool_call>",
    r"\b(reveal|print|show|exfiltrate|send)\b.{0,30}\b(api[_ -]?keys?|passwords?|secrets?|credentials)\b",
    r"\bassistant must\b|\bthe (ai|assistant|model) (must|should) (now )?(ignore|say|respond|reply)\b",
]
_RE = re.compile("|".join(f"(?:{p})" for p in _PATTERNS), re.IGNORECASE | re.DOTALL)


def find_injection(text: str) -> str | None:
    """The first instruction-like span in `text` (shortened), or None."""
    m = _RE.search(text)
    if m is None:
        return None
    return m.group(0)[:120]
