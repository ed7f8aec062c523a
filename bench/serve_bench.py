"""Serving benchmark against one or two OpenAI-compatible servers, side by side in one run.

    python bench/serve_bench.py --url http://127.0.0.1:8000/v1 --model NAME --label jongleur \\
        --url2 http://127.0.0.1:8081/v1 --model2 NAME2 --label2 llama-server \\
        --workload chat --concurrency 1,4,16 --requests 32 --prompt-tokens 237 --max-tokens 128 \\
        --ignore-eos --json out.json

Workloads (../shared/PERFORMANCE.md): chat (throughput and latency per concurrency level), shared-prefix
(TTFT with a cached long system prompt vs cold), priority (high-priority TTFT under a saturating
low-priority stream vs idle), mixed (short requests' TTFT while long prompts are prefilled vs idle).
Several may be given, comma-separated. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx
import machine
import report
import workloads
from loadgen import Target

WORKLOADS = ("chat", "shared-prefix", "priority", "mixed")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", required=True, help="first server's base URL, ending in /v1")
    ap.add_argument("--model", required=True)
    ap.add_argument("--label", default="A")
    ap.add_argument("--weight-bytes", type=float, default=None,
                    help="bytes of weights the first server reads per decode step (for the bandwidth bound)")
    ap.add_argument("--url2", default=None, help="second server (the peer), interleaved with the first")
    ap.add_argument("--model2", default=None, help="model name on the second server (default: --model)")
    ap.add_argument("--label2", default="B")
    ap.add_argument("--weight-bytes2", type=float, default=None)
    ap.add_argument("--workload", default="chat", help=f"comma-separated, of: {', '.join(WORKLOADS)}")
    ap.add_argument("--concurrency", default="1,4,16", help="chat: comma-separated concurrency levels")
    ap.add_argument("--requests", type=int, default=32, help="chat: requests per level and system")
    ap.add_argument("--repeats", type=int, default=1, help="chat: runs per level and system (A B A B)")
    ap.add_argument("--prompt-tokens", type=int, default=237, help="approximate prompt length (calibrated)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--ignore-eos", action="store_true", help="generate exactly --max-tokens tokens")
    ap.add_argument("--prefix-tokens", type=int, default=1024, help="shared-prefix: system prompt length")
    ap.add_argument("--probe-requests", type=int, default=8,
                    help="shared-prefix/priority/mixed: requests measured per phase")
    ap.add_argument("--probe-max-tokens", type=int, default=8)
    ap.add_argument("--bg-concurrency", type=int, default=16, help="priority/mixed: background streams")
    ap.add_argument("--long-prompt-tokens", type=int, default=2048, help="mixed: background prompt length")
    ap.add_argument("--settle-s", type=float, default=5.0, help="priority/mixed: background head start")
    ap.add_argument("--priority-low", default="low", help="value of the body's `priority` for background")
    ap.add_argument("--priority-high", default="high", help="value of the body's `priority` for probes")
    ap.add_argument("--seed", type=int, default=None,
                    help="prompt seed (default: from the clock, so a rerun does not hit a warm prefix cache)")
    ap.add_argument("--measure-machine", action="store_true",
                    help="also measure memory bandwidth and GEMM peaks (bench/machine.py) in this run")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for --measure-machine")
    ap.add_argument("--dtype", default=None, help="free text recorded with the run (e.g. 'bf16 / Q5_0 GGUF')")
    ap.add_argument("--json", default=None, help="write every figure here")
    return ap.parse_args()


async def server_models(target: Target) -> Any:
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.get(f"{target.url}/models")
            return [m.get("id") for m in resp.json().get("data", [])]
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return f"unavailable: {exc}"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    targets = [Target(args.label, args.url.rstrip("/"), args.model, args.weight_bytes)]
    if args.url2:
        targets.append(Target(args.label2, args.url2.rstrip("/"), args.model2 or args.model, args.weight_bytes2))
    labels = [t.label for t in targets]
    if len(set(labels)) != len(labels):
        raise SystemExit("--label and --label2 must differ")
    chosen = [w.strip() for w in args.workload.split(",") if w.strip()]
    if unknown := [w for w in chosen if w not in WORKLOADS]:
        raise SystemExit(f"unknown workload(s) {unknown}; choose from {WORKLOADS}")
    seed = args.seed if args.seed is not None else int(time.time()) % 1_000_000

    info = machine.measure(args.threads) if args.measure_machine else machine.cpu_info()
    print(machine.describe(info))
    out: dict[str, Any] = {
        "machine": info, "dtype": args.dtype, "seed": seed, "args": vars(args),
        "targets": [{"label": t.label, "url": t.url, "model": t.model, "weight_bytes": t.weight_bytes,
                     "server_models": await server_models(t)} for t in targets],
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }

    for t in targets:
        await workloads.warmup(t)
    fit = await workloads.calibrate(targets[0])
    out["token_fit"] = {"overhead": fit.overhead, "per_word": fit.per_word}
    print(f"Prompt calibration on {targets[0].label}: {fit.overhead:.0f} + {fit.per_word:.2f} tokens/word; "
          f"seed {seed}; systems: {', '.join(labels)}")
    words = fit.words_for(args.prompt_tokens)
    shape = workloads.Shape(words, args.max_tokens, args.ignore_eos, seed)

    if "chat" in chosen:
        levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
        res = await workloads.chat(targets, levels, args.requests, shape, args.repeats)
        out["chat"] = res
        print(f"\n== chat: {args.requests} requests, ~{args.prompt_tokens} prompt tokens, "
              f"{args.max_tokens} max tokens{' (ignore_eos)' if args.ignore_eos else ''} ==")
        print(report.chat_table(res, labels))
        if "bandwidth" in info:
            frac = report.decode_fraction(res, {t.label: t.weight_bytes for t in targets},
                                          info["bandwidth"]["read_gbps"])
            if frac:
                print(frac)

    if "shared-prefix" in chosen:
        prefix_words = fit.words_for(args.prefix_tokens) - round(fit.overhead / fit.per_word)
        res = await workloads.shared_prefix(targets, args.probe_requests, max(prefix_words, 1), 24,
                                            args.probe_max_tokens, seed)
        out["shared_prefix"] = res
        print(f"\n== shared-prefix: ~{args.prefix_tokens}-token system prompt, sequential ==")
        print(report.ttft_pair_table(res, labels, "cold", "warm"))

    iso_common: dict[str, Any] = {
        "probe_count": args.probe_requests, "probe_words": words,
        "probe_max_tokens": args.probe_max_tokens, "settle_s": args.settle_s, "gap_s": 0.5,
    }
    if "priority" in chosen:
        spec = workloads.Isolation(
            bg_concurrency=args.bg_concurrency, bg_words=words, bg_max_tokens=args.max_tokens,
            bg_extra={"priority": args.priority_low}, probe_extra={"priority": args.priority_high},
            **iso_common)
        res = await workloads.isolation(targets, spec, seed, "priority")
        out["priority"] = res
        print(f"\n== priority: {args.bg_concurrency} low-priority streams, high-priority probes ==")
        print(report.ttft_pair_table(res, labels, "idle", "loaded"))

    if "mixed" in chosen:
        spec = workloads.Isolation(
            bg_concurrency=args.bg_concurrency, bg_words=fit.words_for(args.long_prompt_tokens),
            bg_max_tokens=args.probe_max_tokens, bg_extra=None, probe_extra=None, **iso_common)
        res = await workloads.isolation(targets, spec, seed, "mixed")
        out["mixed"] = res
        print(f"\n== mixed: {args.bg_concurrency} streams of ~{args.long_prompt_tokens}-token prompts, "
              f"short probes ==")
        print(report.ttft_pair_table(res, labels, "idle", "loaded"))
    return out


def main() -> None:
    args = parse_args()
    out = asyncio.run(run(args))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2, default=str)
        print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
