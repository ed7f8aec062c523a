"""An on-disk cache of tokenizers built from GGUF files.

Building a tokenizer from GGUF metadata takes seconds (merges rebuilt, 100k+ tokens); loading the
resulting `tokenizer.json` takes well under that. Entries live in `<cache>/<key>/` with
`tokenizer.json` and `tokenizer_info.json`; `<cache>/index/` maps a file's size and mtime to the
length of its metadata section and its digest, so a warm start hashes only those few MB of the
file and never parses it. Writes are atomic (temp file + rename), so concurrent starts are safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from jongleur.paths import cache_dir

# bump when the builder's output changes, so stale entries are not reused
BUILDER_VERSION = "2"


def default_tokenizer_cache_dir() -> Path:
    return cache_dir() / "tokenizers"


def entry_key(identity: str) -> str:
    """The directory name for a file identity (a metadata digest, or a caller-given digest)."""
    return hashlib.sha256(f"{BUILDER_VERSION}:{identity}".encode()).hexdigest()[:32]


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class TokenizerCache:
    """Where built tokenizers for GGUF files are kept, keyed by the file's identity."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_tokenizer_cache_dir()

    def _stat_index(self, path: Path) -> Path:
        st = path.stat()
        name = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
        return self.root / "index" / f"{name}-{st.st_size}-{st.st_mtime_ns}.json"

    def remembered_identity(self, path: Path) -> tuple[int, str] | None:
        """`(metadata length, digest)` recorded for this file's current size and mtime, if any."""
        try:
            data = json.loads(self._stat_index(path).read_text())
            return int(data["metadata_length"]), str(data["digest"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def remember_identity(self, path: Path, metadata_length: int, digest: str) -> None:
        record = {"metadata_length": metadata_length, "digest": digest}
        try:
            _atomic_write(self._stat_index(path), json.dumps(record))
        except OSError:
            pass  # a read-only cache only costs speed

    def load(self, identity: str) -> tuple[str, dict[str, Any]] | None:
        """`(tokenizer.json text, info dict)` for this identity, or None when absent or unreadable."""
        entry = self.root / entry_key(identity)
        try:
            info = json.loads((entry / "tokenizer_info.json").read_text(encoding="utf-8"))
            return (entry / "tokenizer.json").read_text(encoding="utf-8"), info
        except (OSError, ValueError):
            return None

    def store(self, identity: str, tokenizer_json: str, info: dict[str, Any]) -> None:
        entry = self.root / entry_key(identity)
        try:
            # the info file is written last: its presence marks a complete entry
            _atomic_write(entry / "tokenizer.json", tokenizer_json)
            _atomic_write(entry / "tokenizer_info.json", json.dumps(info, ensure_ascii=False))
        except OSError:
            pass
