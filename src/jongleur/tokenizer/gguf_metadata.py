"""Read the tokenizer part of a GGUF file's metadata, fast, without touching tensor data.

`gguf.GGUFReader` parses every field into numpy views and takes 15-30 s on a 262k-token vocabulary;
this reader walks the key/value section once with `struct` and decodes only the keys asked for.
It also reports where the metadata section ends, so a cache can key on a digest of exactly those bytes.
"""

from __future__ import annotations

import hashlib
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

_MAGIC = b"GGUF"
_STRING, _ARRAY = 8, 9
# fixed-size value types: numpy dtype per GGUF type id
_DTYPES: dict[int, str] = {
    0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8", 12: "<f8"
}
_MAX_KV = 1 << 20
_MAX_ARRAY = 1 << 26


class GgufFormatError(ValueError):
    """The file is not a GGUF file, or its metadata section is truncated or inconsistent."""


@dataclass(frozen=True)
class GgufTokenizerMetadata:
    """The tokenizer keys of one GGUF file (llama.cpp's names, without the `tokenizer.ggml.` prefix)."""

    architecture: str
    model: str  # "gpt2" (byte-level BPE), "llama" (sentencepiece), ...
    pre: str | None
    tokens: list[str]
    token_types: list[int]
    scores: list[float] | None
    merges: list[str] | None
    bos_token_id: int | None
    eos_token_id: int | None
    unk_token_id: int | None
    pad_token_id: int | None
    add_bos_token: bool | None
    add_eos_token: bool | None
    add_space_prefix: bool | None
    chat_template: str | None
    extra: dict[str, Any] = field(default_factory=dict)


class _Cursor:
    """A bounds-checked reader over the mapped file."""

    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int) -> int:
        start = self.pos
        if n < 0 or start + n > len(self.buf):
            raise GgufFormatError(f"{self.path.name}: metadata runs past the end of the file (truncated?)")
        self.pos += n
        return start

    def unpack(self, fmt: str) -> Any:
        start = self.take(struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.buf, start)[0]

    def string(self) -> str:
        n = self.unpack("<Q")
        start = self.take(n)
        return bytes(self.buf[start:start + n]).decode("utf-8", errors="replace")

    def skip_string(self) -> None:
        self.take(self.unpack("<Q"))

    def value(self, vtype: int, keep: bool) -> Any:
        if vtype == _STRING:
            if keep:
                return self.string()
            self.skip_string()
            return None
        if vtype == _ARRAY:
            return self.array(keep)
        if vtype not in _DTYPES:
            raise GgufFormatError(f"{self.path.name}: unknown metadata value type {vtype}")
        dtype = np.dtype(_DTYPES[vtype])
        start = self.take(dtype.itemsize)
        scalar = np.frombuffer(self.buf, dtype, 1, start)[0].item()
        return bool(scalar) if vtype == 7 else scalar

    def array(self, keep: bool) -> Any:
        etype, count = self.unpack("<I"), self.unpack("<Q")
        if count > _MAX_ARRAY:
            raise GgufFormatError(f"{self.path.name}: metadata array of {count} entries is implausible")
        if etype == _STRING:
            if keep:
                return [self.string() for _ in range(count)]
            for _ in range(count):
                self.skip_string()
            return None
        if etype == _ARRAY:
            out = [self.array(keep) for _ in range(count)]
            return out if keep else None
        if etype not in _DTYPES:
            raise GgufFormatError(f"{self.path.name}: unknown metadata array type {etype}")
        dtype = np.dtype(_DTYPES[etype])
        start = self.take(dtype.itemsize * count)
        if not keep:
            return None
        return np.frombuffer(self.buf, dtype, count, start).tolist()


def _wanted(key: str) -> bool:
    return key.startswith("tokenizer.") or key == "general.architecture" or key == "general.name"


def read_metadata(path: Path) -> tuple[dict[str, Any], int]:
    """`(tokenizer-related keys -> values, byte length of header + metadata section)`."""
    path = Path(path)
    with path.open("rb") as f:
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as exc:  # empty file
            raise GgufFormatError(f"{path.name}: empty file") from exc
    try:
        cur = _Cursor(buf, path)
        if bytes(buf[cur.take(4):4]) != _MAGIC:
            raise GgufFormatError(f"{path.name}: not a GGUF file (bad magic)")
        version = cur.unpack("<I")
        if version not in (2, 3):
            raise GgufFormatError(f"{path.name}: unsupported GGUF version {version}")
        cur.unpack("<Q")  # tensor count
        kv_count = cur.unpack("<Q")
        if kv_count > _MAX_KV:
            raise GgufFormatError(f"{path.name}: {kv_count} metadata keys is implausible")
        out: dict[str, Any] = {}
        for _ in range(kv_count):
            key = cur.string()
            keep = _wanted(key)
            value = cur.value(cur.unpack("<I"), keep)
            if keep:
                out[key] = value
        return out, cur.pos
    finally:
        buf.close()


def metadata_digest(path: Path, length: int) -> str:
    """SHA-256 of the first `length` bytes (header + metadata) of the file."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        remaining = length
        while remaining > 0:
            block = f.read(min(remaining, 4 << 20))
            if not block:
                raise GgufFormatError(f"{Path(path).name}: shorter than its recorded metadata")
            digest.update(block)
            remaining -= len(block)
    return digest.hexdigest()


def read_tokenizer_metadata(path: Path) -> tuple[GgufTokenizerMetadata, int]:
    """The tokenizer metadata of a GGUF file, and the length of its metadata section."""
    raw, length = read_metadata(path)

    def get(key: str) -> Any:
        return raw.get(f"tokenizer.ggml.{key}")

    tokens = get("tokens")
    if not isinstance(tokens, list) or not tokens or get("model") is None:
        raise GgufFormatError(f"{Path(path).name}: the file carries no tokenizer (tokenizer.ggml.tokens)")
    types = get("token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise GgufFormatError(f"{Path(path).name}: token_type and tokens differ in length")
    meta = GgufTokenizerMetadata(
        architecture=str(raw.get("general.architecture", "")),
        model=str(get("model")),
        pre=get("pre"),
        tokens=tokens,
        token_types=types,
        scores=get("scores"),
        merges=get("merges"),
        bos_token_id=get("bos_token_id"),
        eos_token_id=get("eos_token_id"),
        unk_token_id=get("unknown_token_id"),
        pad_token_id=get("padding_token_id"),
        add_bos_token=get("add_bos_token"),
        add_eos_token=get("add_eos_token"),
        add_space_prefix=get("add_space_prefix"),
        chat_template=raw.get("tokenizer.chat_template"),
    )
    for name in ("bos_token_id", "eos_token_id", "unk_token_id", "pad_token_id"):
        value = getattr(meta, name)
        if value is not None and not 0 <= value < len(tokens):
            raise GgufFormatError(f"{Path(path).name}: {name} {value} is outside the vocabulary")
    return meta, length
