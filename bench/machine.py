"""The machine and its physical limits: CPU description, memory bandwidth and GEMM peaks in torch.

Reports state the fraction of these limits a server reaches: one-sequence decode cannot beat
(weight bytes read per step) / (memory bandwidth); batched decode and prefill cannot beat the GEMM peak.

    python bench/machine.py [--json machine.json] [--threads 2] [--weight-bytes 4.9e8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import Any

# Shapes of Qwen2.5-0.5B's MLP: hidden 896, intermediate 4864.
GEMM_K, GEMM_N = 896, 4864
GEMM_ROWS = (1, 16, 256)


def cpu_info() -> dict[str, Any]:
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = set(value.split())
    except OSError:
        pass
    wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8", "fma")
    info: dict[str, Any] = {
        "cpu_model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "isa": [f for f in wanted if f in flags],
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info


def _time(fn, repeats: int) -> float:
    """Median seconds of `fn()` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def memory_bandwidth(size_mb: int = 512, repeats: int = 7) -> dict[str, float]:
    """GB/s of a large sum (read only) and a large copy (read + write) in torch."""
    import torch

    n = size_mb * 1024 * 1024 // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    nbytes = src.numel() * 4
    t_sum = _time(lambda: src.sum(), repeats)
    t_copy = _time(lambda: dst.copy_(src), repeats)
    return {"read_gbps": nbytes / t_sum / 1e9, "copy_gbps": 2 * nbytes / t_copy / 1e9, "size_mb": size_mb}


def gemm_peaks(repeats: int = 9) -> dict[str, dict[str, float]]:
    """GFLOP/s of [M, K] x [K, N] in bf16 (matmul) and int8 x int8 -> int32 (`torch._int_mm`)."""
    import torch

    out: dict[str, dict[str, float]] = {"bf16": {}, "int8": {}, "fp32": {}}
    w = torch.randn(GEMM_K, GEMM_N)
    w_bf16 = w.to(torch.bfloat16)
    w_i8 = torch.randint(-127, 127, (GEMM_K, GEMM_N), dtype=torch.int8)
    for m in GEMM_ROWS:
        flops = 2 * m * GEMM_K * GEMM_N
        x = torch.randn(m, GEMM_K)
        x_bf16 = x.to(torch.bfloat16)
        x_i8 = torch.randint(-127, 127, (m, GEMM_K), dtype=torch.int8)
        out["fp32"][str(m)] = flops / _time(lambda x=x: x @ w, repeats) / 1e9
        out["bf16"][str(m)] = flops / _time(lambda x_bf16=x_bf16: x_bf16 @ w_bf16, repeats) / 1e9
        try:
            out["int8"][str(m)] = flops / _time(lambda x_i8=x_i8: torch._int_mm(x_i8, w_i8), repeats) / 1e9
        except RuntimeError as exc:  # shape or build restrictions of _int_mm
            out["int8"][str(m)] = float("nan")
            print(f"  _int_mm at {m} rows failed: {exc}")
    return out


def measure(threads: int | None = None) -> dict[str, Any]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    info = cpu_info()
    info["bandwidth"] = memory_bandwidth()
    info["gemm_gflops"] = gemm_peaks()
    info["gemm_shape"] = f"[M, {GEMM_K}] x [{GEMM_K}, {GEMM_N}]"
    return info


def decode_bound(weight_bytes: float, bandwidth_gbps: float) -> float:
    """Tokens/s one sequence cannot beat when each step reads `weight_bytes`."""
    return bandwidth_gbps * 1e9 / weight_bytes


def describe(info: dict[str, Any]) -> str:
    lines = [
        (f"CPU: {info['cpu_model']} ({info['usable_cpus']} usable of {info['logical_cpus']} logical CPUs; "
         f"ISA: {', '.join(info['isa']) or '-'})"),
        f"Python {info['python']}, torch {info.get('torch')} ({info.get('torch_threads')} threads)",
    ]
    if "bandwidth" in info:
        bw = info["bandwidth"]
        lines.append(f"Memory bandwidth: read {bw['read_gbps']:.1f} GB/s, copy {bw['copy_gbps']:.1f} GB/s")
    if "gemm_gflops" in info:
        for dtype, by_rows in info["gemm_gflops"].items():
            cells = ", ".join(f"{rows} rows {v:.1f}" for rows, v in by_rows.items())
            lines.append(f"GEMM {info['gemm_shape']} {dtype}: {cells} GFLOP/s")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--weight-bytes", type=float, default=None,
                    help="bytes of weights read per decode step, to print the one-sequence decode bound")
    ap.add_argument("--json", default=None, help="write the measurements here")
    args = ap.parse_args()
    info = measure(args.threads)
    print(describe(info))
    if args.weight_bytes:
        bound = decode_bound(args.weight_bytes, info["bandwidth"]["read_gbps"])
        info["decode_bound_tok_s"] = bound
        print(f"One-sequence decode bound for {args.weight_bytes / 1e6:.0f} MB of weights: {bound:.1f} tok/s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(info, f, indent=2)


if __name__ == "__main__":
    main()
