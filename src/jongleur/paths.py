"""Where jongleur keeps its files when no config says otherwise.

`$JONGLEUR_DATA_DIR`, else `~/.jongleur`: the bundled models (`bundled/`), the weight, tokenizer and
kernel caches (`cache/`). The server's `data_dir` setting reads the same variable (`config.py`).
"""

from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    return Path(os.environ.get("JONGLEUR_DATA_DIR") or Path.home() / ".jongleur")


def cache_dir() -> Path:
    return data_dir() / "cache"
