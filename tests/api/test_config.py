"""Settings: precedence (flags > env > toml > defaults), secure defaults, the CLI surface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from jongleur.config import Settings, describe_fields


def test_defaults_are_safe() -> None:
    s = Settings.load()
    assert (s.host, s.port) == ("127.0.0.1", 8000) and s.is_loopback and s.cors_origins == []


def test_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "jongleur.toml"
    toml.write_text('port = 9000\nmax_queue = 3\nmodel = "from-toml"\n')
    monkeypatch.setenv("JONGLEUR_MAX_QUEUE", "7")
    s = Settings.load(toml, model="from-flag", port=None)
    assert (s.port, s.max_queue, s.model) == (9000, 7, "from-flag")
    monkeypatch.setenv("JONGLEUR_CONFIG", str(toml))
    assert Settings.load().port == 9000


def test_refuses_public_bind_without_key(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match="API key"):
        Settings.load(host="0.0.0.0")
    monkeypatch.setenv("JONGLEUR_API_KEY", "k")
    assert Settings.load(host="0.0.0.0").all_api_keys() == ["k"]


def test_refuses_wildcard_cors_and_unknown_keys(tmp_path: Path) -> None:
    with pytest.raises(ValidationError):
        Settings.load(cors_origins=["*"])
    bad = tmp_path / "bad.toml"
    bad.write_text("prot = 1\n")
    with pytest.raises(ValidationError):
        Settings.load(bad)


def test_every_field_documented() -> None:
    assert all(desc for _, _, _, desc in describe_fields())


def test_cli_help_and_refusal() -> None:
    run = [sys.executable, "-m", "jongleur.cli"]
    out = subprocess.run([*run, "--help"], capture_output=True, text=True, timeout=60, check=False).stdout
    for command in ("serve", "chat", "run", "models"):
        assert command in out
    res = subprocess.run([*run, "serve", "--host", "0.0.0.0", "--port", "1"], capture_output=True, text=True, check=False,
                         timeout=60, env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    assert res.returncode == 2 and "API key" in res.stderr
