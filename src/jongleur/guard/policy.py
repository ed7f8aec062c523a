"""`GuardPolicy`: per key (stored with the key) or, when a key has none, the default of its level."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

PII_KINDS = ("email", "phone", "iban", "card", "nir")
Action = Literal["off", "flag", "redact"]


class GuardPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    max_input_chars: int | None = Field(None, ge=1, description="longer input text -> 400")
    deny_patterns: tuple[str, ...] = Field((), max_length=64, description="regexes; a match in input -> 400")
    pii_input: Action = "off"
    pii_output: Action = "off"
    pii_kinds: tuple[Literal["email", "phone", "iban", "card", "nir"], ...] = PII_KINDS
    injection: Literal["off", "flag", "block"] = "flag"
    mask_secrets: bool = True  # API-key-looking strings in output -> [SECRET]

    @field_validator("deny_patterns")
    @classmethod
    def _compiles(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        for p in patterns:
            if len(p) > 200:
                raise ValueError("a deny pattern may be at most 200 characters")
            try:
                re.compile(p)
            except re.error as exc:
                raise ValueError(f"invalid deny pattern {p!r}: {exc}") from None
        return patterns


# Lower clearance = traffic from less trusted places: redact more. Secrets are always masked.
_LEVEL_DEFAULTS = {
    0: GuardPolicy(pii_input="redact", pii_output="redact"),
    1: GuardPolicy(pii_input="off", pii_output="redact"),
    2: GuardPolicy(pii_input="off", pii_output="flag"),
    3: GuardPolicy(pii_input="off", pii_output="flag"),
}
LOCAL_POLICY = GuardPolicy()  # no key at all (loopback): secrets masked, injections flagged


def default_policy(level: int) -> GuardPolicy:
    return _LEVEL_DEFAULTS.get(int(level), _LEVEL_DEFAULTS[0])
