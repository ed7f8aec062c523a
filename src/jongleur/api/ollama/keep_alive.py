"""Ollama's `keep_alive`: how long a store model stays loaded after a request.

Accepted, as Ollama does: a Go duration string ("5m", "30s", "1h30m", "250ms", "-1m"), a bare
number string ("300"), or a JSON number of seconds. 0 unloads the model right after the request
(an empty request with 0 unloads it now); a negative value keeps it loaded until it is needed
for room. Anything else is a 400 naming `keep_alive`. Internally: seconds, negative = forever.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BeforeValidator

if TYPE_CHECKING:
    from jongleur.api.model_registry import ModelRegistry
    from jongleur.catalog.served import ServedModel

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"[+-]?(\d+(?:\.\d*)?|\.\d+)")
MAX_SECONDS = 10 * 365 * 86400.0  # longer is "forever" in practice; keeps the arithmetic finite
FOREVER = -1.0


def _duration_seconds(text: str) -> float:
    body = text.lstrip("+-")
    sign = -1.0 if text.startswith("-") else 1.0
    if _NUMBER.fullmatch(text):
        return float(text)
    pos, total = 0, 0.0
    while pos < len(body):
        part = _PART.match(body, pos)
        if part is None:
            raise ValueError(f"{text!r} is not a duration; use e.g. \"5m\", \"30s\", \"1h\", a number of "
                             "seconds, 0 (unload after the request) or a negative value (keep loaded)")
        total += float(part.group(1)) * _UNITS[part.group(2)]
        pos = part.end()
    if not body:
        raise ValueError("keep_alive holds no duration")
    return sign * total


def keep_alive_seconds(value: Any) -> float | None:
    """A request's `keep_alive` in seconds (None: not given; negative: forever); ValueError if invalid."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        # ValueError, not TypeError: pydantic turns only ValueError into a 400 naming the field
        raise ValueError("keep_alive must be a duration string (\"5m\") or a number of seconds")  # noqa: TRY004
    if isinstance(value, str):
        if len(value) > 64:
            raise ValueError("keep_alive is too long")
        seconds = _duration_seconds(value.strip())
    else:
        seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError("keep_alive must be finite")
    return FOREVER if seconds < 0 else min(seconds, MAX_SECONDS)


KeepAlive = Annotated[float | None, BeforeValidator(keep_alive_seconds)]


NEVER = "2999-01-01T00:00:00Z"  # configured, pinned or kept-forever models


def ps_fields(registry: ModelRegistry, served: ServedModel) -> dict[str, Any]:
    """`/api/ps` figures of a loaded model: its real expiry and memory (size_vram 0 on CPU)."""
    entry = registry.catalog_entry(served)
    size = entry.estimate if entry is not None else int((served.details or {}).get("size", 0))
    expires = registry.catalog.expires_at(entry) if entry is not None and registry.catalog else None
    on_gpu = str((served.details or {}).get("device", "cpu")).startswith("cuda")
    when = datetime.fromtimestamp(expires, UTC).isoformat().replace("+00:00", "Z") if expires else NEVER
    return {"size": size, "size_vram": size if on_gpu else 0, "expires_at": when}
