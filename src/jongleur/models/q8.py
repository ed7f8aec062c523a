"""Weight-only int8 linears for CPUs: the engine's `int8` dtype.

On CPUs without native bf16 (AVX2 + FMA only) a decode step is bound by reading fp32 weights
(4 bytes each). Here weights are stored like GGUF's Q8_0: int8 with one fp32 scale per 32
weights along the input dimension (1.125 bytes per weight); activations stay fp32, so only the
weights are rounded, once, at load. The matmul is a small C kernel (`kernels/q8_linear.c`,
AVX2 + FMA, OpenMP) compiled with the system C compiler on first use and cached next to the
converted weights; without a compiler or AVX2 the `int8` dtype is refused with a clear error and
`auto` keeps fp32.
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
from dataclasses import dataclass
from pathlib import Path

import torch

from jongleur.models.cpu import cpu_flags

log = logging.getLogger(__name__)

BLOCK = 32
_SOURCE = Path(__file__).parent / "kernels" / "q8_linear.c"
_FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC"]
_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_error: str | None = None


class Q8UnavailableError(RuntimeError):
    """The int8 kernel cannot run here (no AVX2/FMA, or no C compiler to build it)."""


@dataclass
class Q8Weight:
    """A `[out_features, in_features]` weight as int8 blocks of 32 with fp32 scales."""

    qweight: torch.Tensor  # [N, K] int8
    scales: torch.Tensor  # [N, K // 32] float32

    @property
    def shape(self) -> tuple[int, int]:
        return (self.qweight.shape[0], self.qweight.shape[1])

    @property
    def nbytes(self) -> int:
        return self.qweight.numel() + self.scales.numel() * 4

    def dequantize(self) -> torch.Tensor:
        n, k = self.shape
        return (self.qweight.float().view(n, k // BLOCK, BLOCK) * self.scales[:, :, None]).view(n, k)


def _build(target: Path) -> None:
    compiler = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise Q8UnavailableError("no C compiler found (install gcc, or set CC) to build the int8 kernel")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        out = Path(tmp) / target.name
        result = subprocess.run(
            [compiler, *_FLAGS, "-o", str(out), str(_SOURCE)], check=False, capture_output=True, text=True, timeout=120
        )
        if result.returncode != 0:
            raise Q8UnavailableError(f"building the int8 kernel failed: {result.stderr.strip()[:500]}")
        os.replace(out, target)  # atomic: a concurrent process sees the old file or the whole new one


def _load() -> ctypes.CDLL:
    global _lib, _error
    with _lock:
        if _lib is not None:
            return _lib
        if _error is not None:
            raise Q8UnavailableError(_error)
        try:
            if not {"avx2", "fma"} <= cpu_flags():
                raise Q8UnavailableError("the int8 kernel needs an x86-64 CPU with AVX2 and FMA")
            from jongleur.models.weight_cache import default_cache_dir

            digest = hashlib.sha256(_SOURCE.read_bytes() + " ".join(_FLAGS).encode()).hexdigest()[:16]
            target = default_cache_dir() / "kernels" / f"q8_linear-{digest}.so"
            if not target.exists():
                log.info("building the int8 kernel (once) into %s", target)
                _build(target)
            lib = ctypes.CDLL(str(target))
        except (Q8UnavailableError, OSError, subprocess.SubprocessError) as e:
            _error = str(e)
            raise Q8UnavailableError(_error) from e
        ptr, long_ = ctypes.c_void_p, ctypes.c_long
        lib.q8_linear.argtypes = [ptr, long_, long_, long_, ptr, ptr, long_, ptr, ptr, long_, ctypes.c_int]
        lib.q8_linear.restype = None
        lib.q8_quantize.argtypes = [ptr, long_, long_, ptr, ptr]
        lib.q8_quantize.restype = None
        _lib = lib
        return lib


def q8_available() -> bool:
    try:
        _load()
    except Q8UnavailableError:
        return False
    return True


def quantize(weight: torch.Tensor) -> Q8Weight:
    """fp32/bf16 `[N, K]` (K a multiple of 32) -> `Q8Weight` (round to nearest, absmax / 127 per block)."""
    if weight.dim() != 2 or weight.shape[1] % BLOCK:
        raise ValueError(f"int8 weights need [N, K] with K a multiple of {BLOCK}, got {tuple(weight.shape)}")
    lib = _load()
    w = weight.detach().to(device="cpu", dtype=torch.float32).contiguous()
    n, k = w.shape
    qweight = torch.empty(n, k, dtype=torch.int8)
    scales = torch.empty(n, k // BLOCK, dtype=torch.float32)
    lib.q8_quantize(w.data_ptr(), n, k, qweight.data_ptr(), scales.data_ptr())
    return Q8Weight(qweight, scales)


def q8_linear(x: torch.Tensor, weight: Q8Weight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight.dequantize(), bias)` without materializing the weight. x: [..., K] float32."""
    lib = _load()
    n, k = weight.shape
    if x.shape[-1] != k or x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError(f"q8_linear needs float32 CPU input [..., {k}], got {x.dtype} {tuple(x.shape)} on {x.device}")
    lead = x.shape[:-1]
    x2 = x.reshape(-1, k)
    if x2.stride(1) != 1:
        x2 = x2.contiguous()
    m = x2.shape[0]
    y = torch.empty(m, n, dtype=torch.float32)
    if m:
        b = bias.detach().to(torch.float32).contiguous() if bias is not None else None
        lib.q8_linear(
            x2.data_ptr(), m, k, x2.stride(0), weight.qweight.data_ptr(), weight.scales.data_ptr(), n,
            b.data_ptr() if b is not None else None, y.data_ptr(), n, torch.get_num_threads(),
        )
    return y.view(*lead, n)


def quantize_model(model: torch.nn.Module) -> int:
    """Turn every linear of a loaded model (and its LM head) into int8 blocks, in place.

    Modules that know how (`quantize_weights(quantize)`: fused QKV, fused gate/up, plain linears,
    the tied head) convert themselves and drop their dense weights. Returns the int8 bytes held.
    """
    for module in list(model.modules()):
        fuse = getattr(module, "fuse_projections", None)
        if fuse is not None:
            fuse()
    total = 0
    for module in list(model.modules()):  # parents first: fused owners before their linears
        convert = getattr(module, "quantize_weights", None)
        if convert is not None:
            convert(quantize)
    with torch.no_grad():
        # What stays dense (embedding, norms, biases) may still be views of the memory-mapped weight
        # cache, which keeps the whole file mapped and its read pages resident: own them instead.
        for param in model.parameters():
            if param.numel():
                param.data = param.data.clone()
    for module in model.modules():
        for value in vars(module).values():
            weights = value if isinstance(value, tuple) else (value,)
            total += sum(w.nbytes for w in weights if isinstance(w, Q8Weight))
    return total
