"""Ollama's `keep_alive` values: Go durations, numbers of seconds, 0 and negatives; the rest refused."""

from __future__ import annotations

import pytest

from jongleur.api.ollama.keep_alive import FOREVER, MAX_SECONDS, keep_alive_seconds


@pytest.mark.parametrize(("value", "seconds"), [
    ("5m", 300.0), ("30s", 30.0), ("1h", 3600.0), ("1h30m", 5400.0), ("250ms", 0.25), ("1.5h", 5400.0),
    (".5s", 0.5), ("0", 0.0), ("300", 300.0), (" 10s ", 10.0), (0, 0.0), (10, 10.0), (2.5, 2.5),
    ("-1m", FOREVER), ("-1", FOREVER), (-1, FOREVER), (-0.5, FOREVER), (1e30, MAX_SECONDS), (None, None),
])
def test_accepted(value: object, seconds: float | None) -> None:
    assert keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("value", ["5 minutes", "abc", "5x", "", "-", "m", "1e9", "5m5", "1d", "9" * 70,
                                   True, False, [1], {"s": 5}, float("inf"), float("nan")])
def test_refused(value: object) -> None:
    with pytest.raises(ValueError, match="keep_alive|duration"):
        keep_alive_seconds(value)
