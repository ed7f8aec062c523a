"""Validation of every name that becomes part of a path in the model store.

Model names, tags, aliases, digests and file names inside a model arrive from requests, the CLI
and the hub; none of them is ever joined to a path before it passed one of these checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # no "/", no "..", no leading dot
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
DIGEST_RE = re.compile(r"^[0-9a-f]{64}$")
FILE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")  # one path component, no leading dot


class InvalidName(ValueError):
    """A name, tag, digest or file name that may not be used (HTTP 400, CLI error)."""

    def __init__(self, what: str, value: str) -> None:
        shown = value if len(value) <= 80 else value[:80] + "..."
        super().__init__(f"invalid {what} {shown!r}")
        self.what = what


def _check(regex: re.Pattern[str], what: str, value: str) -> str:
    if not isinstance(value, str) or not regex.fullmatch(value) or ".." in value:
        raise InvalidName(what, str(value))
    return value


def check_name(value: str) -> str:
    return _check(NAME_RE, "model name", value.lower() if isinstance(value, str) else value)


def check_tag(value: str) -> str:
    return _check(TAG_RE, "tag", value)


def check_digest(value: str) -> str:
    return _check(DIGEST_RE, "sha256 digest", value.lower() if isinstance(value, str) else value)


def check_file_name(value: str) -> str:
    """A file inside a model folder: a single component (HF subfolders are flattened with '__')."""
    return _check(FILE_RE, "file name", value)


@dataclass(frozen=True)
class ModelRef:
    """`name@tag` (or `name` alone: the latest version, or an alias of that name)."""

    name: str
    tag: str | None = None

    def __str__(self) -> str:
        return f"{self.name}@{self.tag}" if self.tag else self.name


def parse_ref(value: str) -> ModelRef:
    """Parse `name`, `name@tag` or Ollama's `name:tag` (`:latest` means the latest version)."""
    if not isinstance(value, str) or len(value) > 100:
        raise InvalidName("model reference", str(value)[:100])
    text = value.strip()
    sep = "@" if "@" in text else (":" if ":" in text else None)
    if sep is None:
        return ModelRef(check_name(text))
    name, tag = text.split(sep, 1)
    if tag == "latest":
        return ModelRef(check_name(name))
    return ModelRef(check_name(name), check_tag(tag))
