"""API key material: generation, the server pepper, digests.

A key is `jl-` + 43 url-safe characters (32 random bytes). The database stores only
HMAC-SHA256(pepper, key): a dump without the pepper file gives nothing to try offline, and the
stored digest presented as a key is just another wrong key. The pepper is 32 random bytes in
`<data_dir>/secrets/pepper`, created with 0600 permissions on first use.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import stat
from pathlib import Path

KEY_PREFIX = "jl-"
KEY_RE = re.compile(r"^jl-[A-Za-z0-9_-]{43}$")
DISPLAY_CHARS = 8


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def well_formed(key: str) -> bool:
    return bool(KEY_RE.match(key))


def display_prefix(key: str) -> str:
    return key[: len(KEY_PREFIX) + DISPLAY_CHARS]


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(8)}"


def load_pepper(path: Path) -> bytes:
    """Read the pepper, creating it (0600, exclusive create) if missing; tighten loose permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            os.chmod(path, 0o600)
        data = path.read_bytes()
        if len(data) < 32:
            raise RuntimeError(f"the pepper file {path} is damaged (shorter than 32 bytes)") from None
        return data
    with os.fdopen(fd, "wb") as f:
        f.write(secrets.token_bytes(32))
    return path.read_bytes()


class Hasher:
    def __init__(self, pepper: bytes) -> None:
        self._pepper = pepper

    def digest(self, key: str) -> bytes:
        return hmac.new(self._pepper, key.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()

    @staticmethod
    def same(a: bytes, b: bytes) -> bool:
        return hmac.compare_digest(a, b)
