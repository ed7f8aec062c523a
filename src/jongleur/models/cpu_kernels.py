"""jongleur's own CPU kernels (`kernels/*.c`): built once with the system C compiler, loaded by ctypes.

AVX2 + FMA, OpenMP on the process's libgomp (torch's own once torch is loaded: one thread pool).
The shared library is cached under `<data_dir>/cache/kernels/`, named by the digest of the sources
and flags, and written atomically, so concurrent processes and upgrades never see a half-built
file. Without a compiler or AVX2 nothing here is used: `auto` keeps fp32 and plain PyTorch.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from jongleur.models.cpu import cpu_flags

log = logging.getLogger(__name__)

_KERNELS = Path(__file__).parent / "kernels"
_SOURCES = [_KERNELS / name for name in ("q8_linear.c", "q5_linear.c", "paged_attention.c", "fused_ops.c")]
_HEADERS = [_KERNELS / "common.h", _KERNELS / "vec_math.h"]
_FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC"]
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None

_PTR, _LONG, _INT, _FLOAT = ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_float
_SIGNATURES = {
    "q8_linear": [_PTR, _LONG, _LONG, _LONG, _PTR, _PTR, _LONG, _PTR, _PTR, _LONG, _INT],
    "q8_quantize": [_PTR, _LONG, _LONG, _PTR, _PTR],
    "q8_dequantize": [_PTR, _PTR, _LONG, _LONG, _PTR],
    "q5_linear": [_PTR, _LONG, _LONG, _LONG, _PTR, _PTR, _LONG, _PTR, _PTR, _LONG, _INT],
    "q5_quantize": [_PTR, _LONG, _LONG, _PTR, _PTR],
    "q5_dequantize": [_PTR, _PTR, _LONG, _LONG, _PTR],
    "paged_decode_attention": [_PTR, _PTR, _PTR, _PTR, _LONG, _PTR, _PTR, _LONG, _LONG, _LONG, _LONG, _LONG,
                               _FLOAT, _LONG, _PTR, _INT],
    "rmsnorm": [_PTR, _LONG, _PTR, _LONG, _PTR, _PTR, _LONG, _LONG, _LONG, _FLOAT, _INT, _INT],
    "rope_neox": [_PTR, _LONG, _LONG, _LONG, _LONG, _PTR, _PTR, _INT],
    "gated_activation": [_PTR, _LONG, _LONG, _LONG, _PTR, _LONG, _INT, _INT],
}


_RETURNS = {"q5_quantize": _LONG}


class KernelsUnavailableError(RuntimeError):
    """The CPU kernels cannot run here (no AVX2/FMA, or no C compiler to build them)."""


def _build(target: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise KernelsUnavailableError("no C compiler found (install gcc, or set CC) to build the CPU kernels")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        command = [compiler, *_FLAGS, "-o", str(out), *map(str, _SOURCES)]
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise KernelsUnavailableError(f"building the CPU kernels failed: {result.stderr.strip()[:500]}")
        os.replace(out, target)  # atomic: a concurrent process sees the old file or the whole new one


def sources_digest() -> str:
    """SHA-256 of the kernels' sources and flags: names the built library, and the packed weights'
    cache (`packed_cache`), whose layout the sources define."""
    return hashlib.sha256(b"".join(p.read_bytes() for p in _SOURCES + _HEADERS) + " ".join(_FLAGS).encode()).hexdigest()


def _open() -> ctypes.CDLL:
    if not {"avx2", "fma"} <= cpu_flags():
        raise KernelsUnavailableError("the CPU kernels need an x86-64 CPU with AVX2 and FMA")
    from jongleur.models.weight_cache import default_cache_dir

    target = default_cache_dir() / "kernels" / f"jongleur-cpu-{sources_digest()[:16]}.so"
    if not target.exists():
        log.info("building the CPU kernels (once) into %s", target)
        _build(target)
    lib = ctypes.CDLL(str(target))
    for name, argtypes in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = argtypes, _RETURNS.get(name)
    return lib


def load_kernels() -> ctypes.CDLL:
    """The kernels library, built on first use. Raises `KernelsUnavailableError` (remembered)."""
    global _lib, _error
    if _lib is not None:  # asked per layer per step: no lock once loaded
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        if _error is not None:
            raise KernelsUnavailableError(_error)
        try:
            _lib = _open()
        except (KernelsUnavailableError, OSError, subprocess.SubprocessError) as e:
            _error = str(e)
            raise KernelsUnavailableError(_error) from e
        return _lib


def kernels_available() -> bool:
    try:
        load_kernels()
    except KernelsUnavailableError:
        return False
    return True
