"""The benchmark workloads of ../shared/PERFORMANCE.md, each run on every target, interleaved.

Every workload returns plain dicts (JSON-ready): per target, the summaries of `loadgen.summarise`.
Systems are interleaved (A B A B ...) at each step so that machine noise hits both alike.
"""

from __future__ import annotations

import asyncio
import statistics
import zlib
from dataclasses import dataclass
from typing import Any

import loadgen
import prompts
from loadgen import Target


@dataclass(frozen=True)
class Shape:
    """What every request of a workload looks like."""

    prompt_words: int
    max_tokens: int
    ignore_eos: bool
    seed: int


async def calibrate(target: Target) -> prompts.TokenFit:
    """Fits prompt tokens to words on the server itself (two probe requests, one output token)."""
    sizes = (40, 240)
    measured = []
    async with loadgen.make_client(2) as client:
        for k, words in enumerate(sizes):
            messages = prompts.chat_prompt(10_000_000 + k, words, seed=0)
            body = loadgen.chat_body(target, messages, 1, False, None)
            res = await loadgen.stream_chat(client, target, body)
            if not res.ok or res.prompt_tokens <= 0:
                print(f"  calibration failed on {target.label} ({res.error}); using a default fit")
                return prompts.DEFAULT_FIT
            measured.append(res.prompt_tokens)
    per_word = (measured[1] - measured[0]) / (sizes[1] - sizes[0])
    return prompts.TokenFit(overhead=measured[0] - per_word * sizes[0], per_word=per_word)


async def warmup(target: Target) -> None:
    async with loadgen.make_client(1) as client:
        body = loadgen.chat_body(target, prompts.chat_prompt(20_000_000, 20), 4, False, None)
        await loadgen.stream_chat(client, target, body)


def _median_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of each numeric field over repeated runs; errors are summed."""
    if len(runs) == 1:
        return runs[0]
    out: dict[str, Any] = {}
    for key, value in runs[0].items():
        vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        if key in ("errors", "requests", "output_tokens"):
            out[key] = sum(vals)
        elif isinstance(value, (int, float)) and vals:
            out[key] = statistics.median(vals)
        else:
            out[key] = value
    out["repeats"] = len(runs)
    return out


async def chat(
    targets: list[Target], levels: list[int], n_requests: int, shape: Shape, repeats: int
) -> dict[str, Any]:
    """Chat throughput: `n_requests` varied prompts per concurrency level, closed loop."""
    per_level: dict[str, Any] = {}
    for li, conc in enumerate(levels):
        runs: dict[str, list[dict[str, Any]]] = {t.label: [] for t in targets}
        for rep in range(repeats):
            # Same prompts for every system at this (level, repeat); never reused across runs.
            seed = shape.seed * 1000 + li * 17 + rep

            def make_body(i: int, target: Target, seed: int = seed) -> dict[str, Any]:
                messages = prompts.chat_prompt(i, shape.prompt_words, seed)
                return loadgen.chat_body(target, messages, shape.max_tokens, shape.ignore_eos, None)

            for target in targets:
                async with loadgen.make_client(conc) as client:
                    results, wall = await loadgen.closed_loop(
                        client, target, n_requests, conc, lambda i, t=target: make_body(i, t)
                    )
                summary = loadgen.summarise(results, wall)
                runs[target.label].append(summary)
                print(
                    f"  chat c={conc} rep={rep} {target.label}: {summary['output_tok_per_s']:.1f} tok/s, "
                    f"TTFT p50 {_fmt(summary['ttft_p50'])} s, errors {summary['errors']}",
                    flush=True,
                )
        per_level[str(conc)] = {label: _median_of(r) for label, r in runs.items()}
    return per_level


async def shared_prefix(
    targets: list[Target], n_requests: int, prefix_words: int, question_words: int, max_tokens: int, seed: int
) -> dict[str, Any]:
    """TTFT with a long system prompt seen before (cached) vs one never seen (cold), sequentially."""
    out: dict[str, Any] = {t.label: {} for t in targets}
    for phase in ("cold", "warm"):
        for target in targets:
            base = seed * 100_000 + (0 if phase == "cold" else 50_000) + _stable(target.label) % 1000 * 10

            def make_body(i: int, target: Target = target, base: int = base, phase: str = phase):
                prefix_seed = base + (i + 1 if phase == "cold" else 0)
                messages = prompts.shared_prefix_prompt(i, prefix_words, question_words, prefix_seed)
                return loadgen.chat_body(target, messages, max_tokens, False, None)

            async with loadgen.make_client(1) as client:
                if phase == "warm":  # prime the cache with the shared prefix
                    await loadgen.stream_chat(client, target, make_body(n_requests + 1))
                results, wall = await loadgen.closed_loop(client, target, n_requests, 1, make_body)
            out[target.label][phase] = loadgen.summarise(results, wall)
            print(f"  shared-prefix {phase} {target.label}: TTFT p50 "
                  f"{_fmt(out[target.label][phase]['ttft_p50'])} s", flush=True)
    return out


@dataclass(frozen=True)
class Isolation:
    """A saturating background stream plus a sequential trickle of probe requests."""

    bg_concurrency: int
    bg_words: int
    bg_max_tokens: int
    bg_extra: dict[str, Any] | None
    probe_count: int
    probe_words: int
    probe_max_tokens: int
    probe_extra: dict[str, Any] | None
    settle_s: float  # let the background fill the server before probing
    gap_s: float  # pause between probes


async def isolation(targets: list[Target], spec: Isolation, seed: int, name: str) -> dict[str, Any]:
    """Probe TTFT on an idle server vs under the background load (priority and mixed workloads)."""
    out: dict[str, Any] = {}
    for target in targets:
        salt = seed * 1000 + _stable(name + target.label) % 997

        def probe_body(i: int, target: Target = target, salt: int = salt) -> dict[str, Any]:
            messages = prompts.chat_prompt(i, spec.probe_words, salt)
            return loadgen.chat_body(target, messages, spec.probe_max_tokens, True, spec.probe_extra)

        def bg_body(i: int, target: Target = target, salt: int = salt) -> dict[str, Any]:
            messages = prompts.chat_prompt(i, spec.bg_words, salt + 500_000)
            return loadgen.chat_body(target, messages, spec.bg_max_tokens, True, spec.bg_extra)

        async with loadgen.make_client(spec.bg_concurrency + 2) as client:
            idle = []
            for i in range(spec.probe_count):
                idle.append(await loadgen.stream_chat(client, target, probe_body(i)))
            bg = loadgen.Background(client, target, spec.bg_concurrency, bg_body)
            bg.start()
            await asyncio.sleep(spec.settle_s)
            loaded = []
            for i in range(spec.probe_count):
                loaded.append(await loadgen.stream_chat(client, target, probe_body(1000 + i)))
                await asyncio.sleep(spec.gap_s)
            await bg.stop()
        idle_s, loaded_s = loadgen.summarise(idle), loadgen.summarise(loaded)
        bg_s = loadgen.summarise([r for r in bg.results if r.ok])
        ratio = (loaded_s["ttft_p50"] / idle_s["ttft_p50"]) if idle_s["ttft_p50"] and loaded_s["ttft_p50"] else None
        out[target.label] = {"idle": idle_s, "loaded": loaded_s, "background_completed": bg_s,
                             "ttft_loaded_over_idle": ratio}
        print(f"  {name} {target.label}: probe TTFT p50 idle {_fmt(idle_s['ttft_p50'])} s, "
              f"loaded {_fmt(loaded_s['ttft_p50'])} s (x{_fmt(ratio)})", flush=True)
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3g}"


def _stable(text: str) -> int:
    """A hash that is the same in every process (str hash is salted per process)."""
    return zlib.crc32(text.encode())
