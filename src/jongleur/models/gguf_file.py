"""A bounds-checked GGUF parser: metadata and tensor directory, with tensor data as memory maps.

We do not use `gguf.GGUFReader` for this: it trusts the counts it reads (an array that claims
2^60 items makes it loop for ever; tensor data past the end of the file comes back silently
short) and it parses every array item in Python (about 30 s for a 150k-token vocabulary). Here
every length is checked against the bytes that remain, numeric arrays are read with numpy, and
each tensor's type, shape and data range are checked, so a truncated or lying file fails fast
with `ModelLoadError`. Dequantization still uses `gguf.quants`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType
from gguf.quants import dequantize

from jongleur.models.validation import ModelLoadError

_MAGIC = b"GGUF"
# GGUF value type -> numpy dtype (little-endian; byte-swapped for big-endian files).
_SCALARS = {0: "u1", 1: "i1", 2: "u2", 3: "i2", 4: "u4", 5: "i4", 6: "f4", 7: "?", 10: "u8", 11: "i8", 12: "f8"}
_STRING, _ARRAY = 8, 9
_MAX_DIMS = 4
_MAX_ELEMENTS = 1 << 40


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # numpy order (slowest dimension first), e.g. [out, in] for a weight
    qtype: GGMLQuantizationType
    offset: int  # absolute offset of the data in the file
    n_bytes: int


@dataclass(frozen=True)
class GGUFFile:
    """A parsed GGUF: metadata (numeric arrays as numpy arrays) and its tensor directory."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo]
    byte_order: str  # "<" or ">"

    def dequantize(self, info: TensorInfo) -> np.ndarray:
        """The tensor as float32, numpy order. Reads only its own byte range."""
        raw = np.memmap(self.path, dtype=np.uint8, mode="r", offset=info.offset, shape=(info.n_bytes,))
        if info.qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            dtype = np.dtype(np.float32 if info.qtype == GGMLQuantizationType.F32 else np.float16)
            values = raw.view(dtype.newbyteorder(self.byte_order)).astype(np.float32)
            return values.reshape(info.shape)
        fast = _TORCH_DEQUANT.get(info.qtype) if self.byte_order == "<" else None
        if fast is not None:  # same float32 results as gguf.quants, vectorized in torch
            return fast(torch.from_numpy(np.array(raw))).reshape(info.shape).numpy()
        block, type_size = GGML_QUANT_SIZES[info.qtype]
        byte_shape = (*info.shape[:-1], info.shape[-1] // block * type_size)
        return dequantize(np.asarray(raw).reshape(byte_shape), info.qtype)


def _dequant_q8_0(raw: torch.Tensor) -> torch.Tensor:
    """Blocks of 34 bytes: f16 scale, 32 x int8."""
    blocks = raw.view(-1, 34)
    scale = blocks[:, :2].contiguous().view(torch.float16).float()  # [n, 1]
    return blocks[:, 2:].contiguous().view(torch.int8).float() * scale  # [n, 32]


def _dequant_q5_0(raw: torch.Tensor) -> torch.Tensor:
    """Blocks of 22 bytes: f16 scale, 32 high bits (little-endian), 16 bytes of low nibbles; (q - 16) * d."""
    blocks = raw.view(-1, 22)
    scale = blocks[:, :2].contiguous().view(torch.float16).float()  # [n, 1]
    shifts = torch.arange(8, dtype=torch.uint8)
    high = ((blocks[:, 2:6, None] >> shifts) & 1).reshape(-1, 32)  # [n, 32]: bit i -> element i
    qs = blocks[:, 6:]  # [n, 16]
    low = torch.cat((qs & 0x0F, qs >> 4), dim=1)  # [n, 32]: elements 0..15 then 16..31
    return ((low | (high << 4)).float() - 16.0) * scale


_TORCH_DEQUANT = {GGMLQuantizationType.Q8_0: _dequant_q8_0, GGMLQuantizationType.Q5_0: _dequant_q5_0}


class _Cursor:
    def __init__(self, buf: np.ndarray, order: str) -> None:
        self.buf, self.pos, self.order = buf, 0, order

    def take(self, n: int) -> int:
        if n < 0 or self.pos + n > len(self.buf):
            raise ModelLoadError(f"GGUF header is truncated or corrupt (needs {n} bytes at offset {self.pos})")
        start = self.pos
        self.pos += n
        return start

    def unpack(self, fmt: str) -> Any:
        start = self.take(struct.calcsize(fmt))
        return struct.unpack_from(self.order + fmt, self.buf, start)[0]

    def string(self) -> str:
        n = self.unpack("Q")
        start = self.take(n)
        try:
            return self.buf[start : start + n].tobytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise ModelLoadError(f"GGUF header has an invalid UTF-8 string at offset {start}") from e

    def value(self, vtype: int, depth: int = 0) -> Any:
        if vtype in _SCALARS:
            return self.array(vtype, 1)[0].item()
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY and depth == 0:
            itype, count = self.unpack("I"), self.unpack("Q")
            if itype in _SCALARS:
                return self.array(itype, count)
            if count * 8 > len(self.buf) - self.pos:  # every string/array item takes >= 8 bytes
                raise ModelLoadError(f"GGUF header array claims {count} items, more than the file holds")
            if itype == _STRING:
                return self.strings(count)
            return [self.value(itype, depth + 1) for _ in range(count)]
        raise ModelLoadError(f"GGUF header has an unsupported value type {vtype} at offset {self.pos}")

    def strings(self, count: int) -> list[str]:
        """`count` length-prefixed strings (the hot loop of vocabulary parsing)."""
        view, pos, end = memoryview(self.buf), self.pos, len(self.buf)
        read_length = struct.Struct(self.order + "Q").unpack_from
        out = []
        try:
            for _ in range(count):
                if pos + 8 > end:
                    raise ModelLoadError(f"GGUF header is truncated in a string array at offset {pos}")
                (n,) = read_length(view, pos)
                pos += 8
                if n > end - pos:
                    raise ModelLoadError(f"GGUF header string at offset {pos} runs past the end of the file")
                out.append(str(view[pos : pos + n], "utf-8"))
                pos += n
        except UnicodeDecodeError as e:
            raise ModelLoadError(f"GGUF header has an invalid UTF-8 string near offset {pos}") from e
        self.pos = pos
        return out

    def array(self, vtype: int, count: int) -> np.ndarray:
        dtype = np.dtype(_SCALARS[vtype]).newbyteorder(self.order)
        start = self.take(count * dtype.itemsize)
        return self.buf[start : start + count * dtype.itemsize].view(dtype).astype(dtype.newbyteorder("="))


def _byte_order(buf: np.ndarray) -> str:
    if len(buf) < 24 or buf[:4].tobytes() != _MAGIC:
        raise ModelLoadError("not a GGUF file (bad magic or too short)")
    little = struct.unpack_from("<I", buf, 4)[0]
    if little in (2, 3):
        return "<"
    if struct.unpack_from(">I", buf, 4)[0] in (2, 3):
        return ">"
    raise ModelLoadError(f"unsupported GGUF version {little} (supported: 2, 3)")


def _tensor_entry(cur: _Cursor) -> tuple[str, tuple[int, ...], GGMLQuantizationType, int]:
    name = cur.string()
    n_dims = cur.unpack("I")
    if not 1 <= n_dims <= _MAX_DIMS:
        raise ModelLoadError(f"GGUF tensor {name!r} has {n_dims} dimensions")
    dims = tuple(cur.unpack("Q") for _ in range(n_dims))
    raw_type = cur.unpack("I")
    try:
        qtype = GGMLQuantizationType(raw_type)
    except ValueError as e:
        raise ModelLoadError(f"GGUF tensor {name!r} has an unknown type {raw_type}") from e
    return name, tuple(reversed(dims)), qtype, cur.unpack("Q")


def _tensor_bytes(name: str, shape: tuple[int, ...], qtype: GGMLQuantizationType) -> int:
    """Bytes of the tensor's data, after checking its shape against its type's block size."""
    if qtype not in GGML_QUANT_SIZES:
        raise ModelLoadError(f"GGUF tensor {name!r} has unsupported type {qtype.name}")
    block, type_size = GGML_QUANT_SIZES[qtype]
    elements = 1
    for d in shape:
        if d <= 0:
            raise ModelLoadError(f"GGUF tensor {name!r} has shape {shape}")
        elements *= d
        if elements > _MAX_ELEMENTS:
            raise ModelLoadError(f"GGUF tensor {name!r} has an absurd shape {shape}")
    if shape[-1] % block:
        raise ModelLoadError(f"GGUF tensor {name!r} row of {shape[-1]} is not a whole number of {qtype.name} blocks")
    return elements // block * type_size


def read_gguf(path: Path) -> GGUFFile:
    """Parse and validate the GGUF at `path` (header only; tensor data stays on disk)."""
    try:
        if path.stat().st_size < 24:
            raise ModelLoadError(f"{path.name} is not a GGUF file (too short)")
        buf = np.memmap(path, dtype=np.uint8, mode="r")
    except OSError as e:
        raise ModelLoadError(f"cannot read {path.name}: {e}") from e
    order = _byte_order(buf)
    cur = _Cursor(buf, order)
    cur.take(4)  # magic
    version = cur.unpack("I")
    tensor_count, kv_count = cur.unpack("Q"), cur.unpack("Q")
    if kv_count * 13 > len(buf) or tensor_count * 33 > len(buf):  # minimal encoded sizes
        raise ModelLoadError(f"GGUF header claims {tensor_count} tensors and {kv_count} keys, too many for the file")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = cur.string()
        metadata[key] = cur.value(cur.unpack("I"))
    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise ModelLoadError(f"GGUF alignment {alignment!r} is not a power of two")
    entries = [_tensor_entry(cur) for _ in range(tensor_count)]
    data_start = -(-cur.pos // alignment) * alignment
    tensors: dict[str, TensorInfo] = {}
    for name, shape, qtype, offset in entries:
        n_bytes = _tensor_bytes(name, shape, qtype)
        start = data_start + offset
        if start + n_bytes > len(buf):
            raise ModelLoadError(
                f"GGUF tensor {name!r} data [{start}, {start + n_bytes}) lies beyond the end of the file "
                f"({len(buf)} bytes): the file is truncated or corrupt"
            )
        if name in tensors:
            raise ModelLoadError(f"GGUF tensor {name!r} appears twice")
        tensors[name] = TensorInfo(name, shape, qtype, start, n_bytes)
    return GGUFFile(path=path, version=version, metadata=metadata, tensors=tensors, byte_order=order)
