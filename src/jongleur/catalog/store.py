"""The model store under `<data_dir>/models`: manifests, content-addressed blobs, aliases.

    blobs/sha256-<hex>                 file contents, named by digest (a GGUF is one blob)
    manifests/<name>/<tag>.json        one `Manifest` per version
    snapshots/<name>/<tag>/<file>      symlinks to the blobs: the path the engine loads
    aliases.json                       alias -> weighted versions (+ the previous targets, for rollback)

Every path is built from validated names only (`catalog/names.py`) and checked to stay inside
the store. Writes are atomic (temp file + rename) and serialised by a lock file, so the CLI and
a running server can share one store.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from jongleur.catalog.manifest import Manifest, ManifestFile, sampling_from_generation_config
from jongleur.catalog.names import (
    InvalidName,
    check_digest,
    check_file_name,
    check_name,
    check_tag,
    parse_ref,
)

GGUF_MAGIC = b"GGUF"
_SKIP = {".git", ".gitattributes", "README.md", ".cache"}


class StoreError(RuntimeError):
    """A store operation that cannot be done (missing model, bad source, digest mismatch)."""


class NotInStore(StoreError):
    pass


class DigestMismatch(StoreError):
    pass


@dataclass(frozen=True)
class AliasTarget:
    ref: str  # name@tag
    weight: int = 100


@dataclass(frozen=True)
class Alias:
    name: str
    targets: tuple[AliasTarget, ...]
    previous: tuple[AliasTarget, ...] = ()


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def copy_hashing(src: Path, dst: Path, progress: bool = False, desc: str = "") -> tuple[str, int]:
    """Copy `src` to `dst`, computing the SHA-256 on the way; (hex digest, size)."""
    digest = hashlib.sha256()
    size = src.stat().st_size
    with src.open("rb") as fin, dst.open("wb") as fout, tqdm(
        total=size, unit="B", unit_scale=True, desc=desc or src.name, disable=not progress
    ) as bar:
        while block := fin.read(4 << 20):
            fout.write(block)
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest(), size


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 << 20):
            digest.update(block)
    return digest.hexdigest()


def _safetensors_params(path: Path) -> int:
    with path.open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100 << 20:
            return 0
        header = json.loads(f.read(n))
    total = 0
    for key, info in header.items():
        if key != "__metadata__":
            count = 1
            for d in info.get("shape", []):
                count *= int(d)
            total += count
    return total


def describe_source(src: Path) -> dict[str, Any]:
    """Architecture, format, context window and weight count of a GGUF file or HF folder."""
    if src.is_file():
        with src.open("rb") as f:
            if f.read(4) != GGUF_MAGIC:
                raise StoreError(f"{src.name} is not a GGUF file (import a GGUF file or an HF folder)")
        from jongleur.models.gguf_file import read_gguf
        from jongleur.models.validation import ModelLoadError

        try:
            gguf = read_gguf(src)
        except (ModelLoadError, ValueError, OSError) as exc:
            raise StoreError(f"{src.name}: unreadable GGUF: {exc}") from None
        arch = str(gguf.metadata.get("general.architecture", ""))
        params = 0
        for t in gguf.tensors.values():
            count = 1
            for d in t.shape:
                count *= d
            params += count
        ctx = int(gguf.metadata.get(f"{arch}.context_length", 0) or 0)
        return {"format": "gguf", "architecture": arch, "parameters": params, "context_window": ctx}
    config_path = src / "config.json"
    if not config_path.is_file():
        raise StoreError(f"{src} has no config.json (import a GGUF file or an HF folder)")
    try:
        config = json.loads(config_path.read_text())
    except ValueError:
        raise StoreError(f"{src}/config.json is not JSON") from None
    params = sum(_safetensors_params(p) for p in src.glob("*.safetensors"))
    return {"format": "safetensors", "architecture": str(config.get("model_type", "")),
            "parameters": params, "context_window": int(config.get("max_position_embeddings", 0) or 0),
            "sampling": _generation_sampling(src / "generation_config.json")}


def _generation_sampling(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        raise StoreError(f"{path.parent}/generation_config.json is not JSON") from None
    return sampling_from_generation_config(config) if isinstance(config, dict) else {}


class ModelStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        for sub in ("blobs", "manifests", "snapshots", "partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._aliases_cache: tuple[int, dict[str, Alias]] | None = None

    # -- paths (validated names only) --------------------------------------------------
    def _inside(self, path: Path) -> Path:
        resolved = path.resolve() if path.exists() else path.parent.resolve() / path.name
        if self.root not in resolved.parents and resolved != self.root:
            raise InvalidName("path", str(path))
        return path

    def blob_path(self, digest: str) -> Path:
        return self._inside(self.root / "blobs" / f"sha256-{check_digest(digest)}")

    def manifest_path(self, name: str, tag: str) -> Path:
        return self._inside(self.root / "manifests" / check_name(name) / f"{check_tag(tag)}.json")

    def snapshot_dir(self, name: str, tag: str) -> Path:
        return self._inside(self.root / "snapshots" / check_name(name) / check_tag(tag))

    @contextmanager
    def lock(self) -> Iterator[None]:
        with (self.root / ".lock").open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- reading ------------------------------------------------------------------------
    def get(self, name: str, tag: str) -> Manifest:
        path = self.manifest_path(name, tag)
        if not path.is_file():
            raise NotInStore(f"no model {name}@{tag} in the store")
        return Manifest.from_json(path.read_text())

    def versions(self, name: str) -> list[Manifest]:
        folder = self.root / "manifests" / check_name(name)
        found = []
        for p in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                found.append(Manifest.from_json(p.read_text()))
            except (ValueError, KeyError, InvalidName):
                continue  # a damaged manifest is skipped, never served
        return sorted(found, key=lambda m: (m.created, m.tag))

    def list(self) -> list[Manifest]:
        out: list[Manifest] = []
        for folder in sorted((self.root / "manifests").iterdir()):
            try:
                out.extend(self.versions(folder.name))
            except InvalidName:
                continue
        return out

    def find(self, ref: str) -> Manifest:
        """`name@tag` -> that version; `name` -> its latest version."""
        parsed = parse_ref(ref)
        if parsed.tag:
            return self.get(parsed.name, parsed.tag)
        versions = self.versions(parsed.name)
        if not versions:
            raise NotInStore(f"no model {parsed.name} in the store")
        return versions[-1]

    def model_path(self, m: Manifest) -> Path:
        """The path the engine loads: the GGUF (a symlink to its blob) or the snapshot folder."""
        if m.external_path:
            return Path(m.external_path)
        folder = self.snapshot_dir(m.name, m.tag)
        return folder / m.files[0].name if m.format == "gguf" else folder

    def verify(self, m: Manifest) -> None:
        """Re-hash every blob of `m`; `DigestMismatch` if one changed or is missing."""
        if m.external_path:
            return  # bundled files are verified where they are assembled
        for f in m.files:
            blob = self.blob_path(f.sha256)
            if not blob.is_file():
                raise DigestMismatch(f"{m.ref}: blob of {f.name} is missing")
            actual = hash_file(blob)
            if actual != f.sha256:
                raise DigestMismatch(f"{m.ref}: {f.name} has SHA-256 {actual}, the manifest says {f.sha256}")

    # -- writing ------------------------------------------------------------------------
    def add_blob(self, src: Path, progress: bool = False, expected: str | None = None) -> tuple[str, int]:
        """Copy `src` into the store by digest (kept once); `DigestMismatch` if `expected` differs."""
        fd, tmp_name = tempfile.mkstemp(dir=self.root / "partial", prefix="import-")
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            digest, size = copy_hashing(src, tmp, progress, desc=f"import {src.name}")
            if expected is not None and digest != expected.lower():
                raise DigestMismatch(f"{src.name} has SHA-256 {digest}, expected {expected}")
            blob = self.blob_path(digest)
            if blob.exists():
                tmp.unlink()
            else:
                os.replace(tmp, blob)
            return digest, size
        finally:
            tmp.unlink(missing_ok=True)

    def register(self, m: Manifest) -> Manifest:
        """Write the manifest and its snapshot links (the blobs must be in place)."""
        with self.lock():
            if not m.external_path:
                folder = self.snapshot_dir(m.name, m.tag)
                if folder.exists():
                    shutil.rmtree(folder)
                folder.mkdir(parents=True)
                for f in m.files:
                    os.symlink(self.blob_path(f.sha256), folder / check_file_name(f.name))
            _atomic_write(self.manifest_path(m.name, m.tag), m.to_json())
        return m

    def import_path(self, src: Path, name: str | None = None, tag: str | None = None,
                    progress: bool = False, **fields: Any) -> Manifest:
        """Import a GGUF file or an HF folder as `name@tag` (default: the file/folder name, next number)."""
        src = Path(src).expanduser()
        if not src.exists():
            raise StoreError(f"{src} does not exist")
        name = check_name(name if name is not None else (src.stem if src.is_file() else src.name).lower())
        tag = check_tag(tag) if tag is not None else self.next_tag(name)
        info = describe_source(src)
        sources = [src] if src.is_file() else sorted(
            p for p in src.iterdir() if p.is_file() and p.name not in _SKIP and not p.name.startswith("."))
        files = []
        for p in sources:
            digest, size = self.add_blob(p, progress)
            files.append(ManifestFile(check_file_name(p.name), digest, size))
        m = Manifest(name=name, tag=tag, files=tuple(files), size=sum(f.size for f in files),
                     source=str(src), **{**info, **fields})
        return self.register(m)

    def next_tag(self, name: str) -> str:
        numbers = [int(m.tag) for m in self.versions(name) if m.tag.isdigit()]
        return str(max(numbers, default=0) + 1)

    def remove(self, name: str, tag: str) -> Manifest:
        m = self.get(name, tag)
        with self.lock():
            in_use = [a.name for a in self.aliases().values() if any(t.ref == m.ref for t in a.targets)]
            if in_use:
                raise StoreError(f"{m.ref} is the target of the alias(es) {', '.join(in_use)}")
            self.manifest_path(name, tag).unlink()
            shutil.rmtree(self.snapshot_dir(name, tag), ignore_errors=True)
            used = {f.sha256 for other in self.list() for f in other.files}
            for f in m.files:
                if f.sha256 not in used:
                    self.blob_path(f.sha256).unlink(missing_ok=True)
        return m

    # -- aliases ------------------------------------------------------------------------
    def aliases(self) -> dict[str, Alias]:
        path = self.root / "aliases.json"
        try:
            mtime = path.stat().st_mtime_ns
        except FileNotFoundError:
            return {}
        if self._aliases_cache and self._aliases_cache[0] == mtime:
            return self._aliases_cache[1]
        data = json.loads(path.read_text())
        out = {}
        for alias, entry in data.items():
            out[alias] = Alias(alias, tuple(AliasTarget(**t) for t in entry["targets"]),
                               tuple(AliasTarget(**t) for t in entry.get("previous", [])))
        self._aliases_cache = (mtime, out)
        return out

    def set_alias(self, alias: str, targets: list[AliasTarget]) -> Alias:
        """Point `alias` at one version, or split it by weight; the old targets become `previous`."""
        alias = check_name(alias)
        if not targets or any(t.weight < 0 for t in targets) or sum(t.weight for t in targets) <= 0:
            raise StoreError("an alias needs at least one target with a positive weight")
        checked = []
        for t in targets:
            m = self.find(t.ref)  # raises NotInStore
            checked.append(replace(t, ref=m.ref))
        if self.versions(alias):
            raise StoreError(f"{alias!r} is a model name; an alias must have a name of its own")
        with self.lock():
            current = dict(self.aliases())
            old = current.get(alias)
            new = Alias(alias, tuple(checked), old.targets if old else ())
            current[alias] = new
            self._write_aliases(current)
        return new

    def remove_alias(self, alias: str) -> None:
        with self.lock():
            current = dict(self.aliases())
            if current.pop(check_name(alias), None) is None:
                raise NotInStore(f"no alias {alias}")
            self._write_aliases(current)

    def _write_aliases(self, aliases: dict[str, Alias]) -> None:
        data = {a.name: {"targets": [t.__dict__ for t in a.targets],
                         "previous": [t.__dict__ for t in a.previous]} for a in aliases.values()}
        _atomic_write(self.root / "aliases.json", json.dumps(data, indent=2, sort_keys=True))
        self._aliases_cache = None
