"""Warm-start cache of converted GGUF weights: dequantize once, then load safetensors in seconds.

Layout of the cache directory:

- `<source-sha256[:32]>-<dtype>.safetensors`: the converted state dict (HF names, final dtype);
- `<source-sha256[:32]>-<dtype>.json`: its manifest (source SHA-256, dtype, SHA-256 of the
  safetensors file, as `chunked_digest`), written last, so an entry without a manifest is never used;
- `<source-sha256[:32]>-packed-<kernels digest>.*`: the same for the `int8` mode's packed weights
  (`packed_cache.py`), a variant in place of the dtype;
- `sources/<sha256(path)[:32]>.json`: (size, mtime_ns) -> SHA-256 of a source file, so a warm load
  does not re-hash a file that has not changed.

An entry is used only if its manifest matches and the safetensors file's own SHA-256 matches the
manifest; anything else (corrupt, partial, other version) is a miss and is rewritten. Cache
failures never fail a load: they are logged and the model is converted from the source.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from jongleur.paths import cache_dir

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
_CHUNK = 8 << 20
_PIECE = 64 << 20


def default_cache_dir() -> Path:
    return cache_dir()


def sha256_file(path: Path, progress: bool = False) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f, tqdm(
        total=path.stat().st_size, unit="B", unit_scale=True, desc=f"hash {path.name}", disable=not progress
    ) as bar:
        while block := f.read(_CHUNK):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def chunked_digest(path: Path) -> str:
    """SHA-256 over the SHA-256s of 64 MiB chunks, hashed on several threads (hashlib drops the GIL)."""
    size = path.stat().st_size

    def chunk(start: int) -> bytes:
        with path.open("rb") as f:
            f.seek(start)
            digest = hashlib.sha256()
            remaining = min(_PIECE, size - start)
            while remaining > 0 and (block := f.read(min(_CHUNK, remaining))):
                digest.update(block)
                remaining -= len(block)
            return digest.digest()

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        parts = list(pool.map(chunk, range(0, size, _PIECE)))
    return hashlib.sha256(b"".join(parts)).hexdigest()


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _dtype_name(dtype: torch.dtype | str) -> str:
    """A dtype's name, or a variant's own (the packed int8 weights: `packed_cache.PackedWeightCache`)."""
    return dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")


class WeightCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def at(cls, cache_dir: str | Path | None) -> WeightCache:
        """The cache in `cache_dir`, or in the default one."""
        return cls(Path(cache_dir) if cache_dir else default_cache_dir())

    def source_digest(self, source: Path) -> str:
        """SHA-256 of `source`, memoized by resolved path, size and mtime."""
        st = source.stat()
        stamp = self.root / "sources" / (hashlib.sha256(str(source.resolve()).encode()).hexdigest()[:32] + ".json")
        try:
            known = json.loads(stamp.read_text())
            if known["size"] == st.st_size and known["mtime_ns"] == st.st_mtime_ns:
                return str(known["sha256"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
        digest = sha256_file(source, progress=st.st_size > (256 << 20))
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(stamp, {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest})
        except OSError as e:
            log.warning("cannot write the source stamp in %s: %s", self.root, e)
        return digest

    def _entry(self, digest: str, dtype: torch.dtype | str) -> tuple[Path, Path]:
        stem = f"{digest[:32]}-{_dtype_name(dtype)}"
        return self.root / f"{stem}.safetensors", self.root / f"{stem}.json"

    def get(self, source: Path, dtype: torch.dtype | str) -> dict[str, torch.Tensor] | None:
        """The cached state dict for `source` in `dtype`, or None (miss, stale or corrupt entry)."""
        try:
            digest = self.source_digest(source)
            weights, manifest_path = self._entry(digest, dtype)
            if not manifest_path.exists():
                return None
            manifest = json.loads(manifest_path.read_text())
            ok = (
                manifest.get("format_version") == FORMAT_VERSION
                and manifest.get("source_sha256") == digest
                and manifest.get("dtype") == _dtype_name(dtype)
                and weights.stat().st_size == manifest.get("size")
                and chunked_digest(weights) == manifest.get("sha256")
            )
            if not ok:
                log.warning("weight cache entry %s is stale or corrupt; converting again", weights.name)
                return None
            return load_file(str(weights))
        except Exception as e:  # noqa: BLE001 - a broken cache must never break a load
            log.warning("weight cache unusable for %s: %s", source.name, e)
            return None

    def put(self, source: Path, dtype: torch.dtype | str, state: dict[str, torch.Tensor]) -> None:
        """Store `state` for `source`; errors (disk full, read-only) are logged, not raised."""
        try:
            digest = self.source_digest(source)
            weights, manifest_path = self._entry(digest, dtype)
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = weights.with_name(f".{weights.name}.{os.getpid()}.tmp")
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp))
            content = chunked_digest(tmp)
            size = tmp.stat().st_size
            os.replace(tmp, weights)
            _write_json_atomic(
                manifest_path,
                {
                    "format_version": FORMAT_VERSION,
                    "source_name": source.name,
                    "source_sha256": digest,
                    "dtype": _dtype_name(dtype),
                    "size": size,
                    "sha256": content,
                },
            )
        except Exception as e:  # noqa: BLE001 - a cache write failure must not fail the load
            log.warning("cannot write the weight cache for %s: %s", source.name, e)
            tmp_files = self.root.glob(f".*.{os.getpid()}.tmp") if self.root.exists() else []
            for leftover in tmp_files:
                leftover.unlink(missing_ok=True)
