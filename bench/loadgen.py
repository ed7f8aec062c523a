"""Streaming requests against an OpenAI-compatible server and the statistics over them.

One request = one streamed `/chat/completions` call with `stream_options.include_usage`, so prompt and
output token counts come from the server's own usage report, not from counting chunks.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx


@dataclass(frozen=True)
class Target:
    """One system under test."""

    label: str
    url: str  # base URL ending in /v1
    model: str
    weight_bytes: float | None = None  # bytes of weights read per decode step, for the bandwidth bound


@dataclass
class RequestResult:
    ok: bool
    start: float
    ttft: float | None = None  # seconds from send to the first streamed token
    e2e: float | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    error: str = ""

    @property
    def tpot(self) -> float | None:
        """Mean time per output token after the first."""
        if self.ttft is None or self.e2e is None or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)


def make_client(concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    return httpx.AsyncClient(timeout=httpx.Timeout(1800.0, connect=30.0), limits=limits)


def chat_body(
    target: Target, messages: list[dict[str, str]], max_tokens: int, ignore_eos: bool, extra: dict | None
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": target.model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if ignore_eos:
        body["ignore_eos"] = True  # vLLM, llama-server and jongleur extension
    if extra:
        body.update(extra)
    return body


async def stream_chat(client: httpx.AsyncClient, target: Target, body: dict[str, Any]) -> RequestResult:
    start = time.perf_counter()
    result = RequestResult(ok=False, start=start)
    chunks = 0
    try:
        async with client.stream("POST", f"{target.url}/chat/completions", json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")
                result.error = f"HTTP {resp.status_code}: {text[:200]}"
                return result
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                event = json.loads(data)
                if "error" in event:
                    result.error = str(event["error"])[:200]
                    return result
                for choice in event.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content") or delta.get("reasoning_content"):
                        chunks += 1
                        if result.ttft is None:
                            result.ttft = time.perf_counter() - start
                usage = event.get("usage")
                if usage:
                    result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    result.output_tokens = int(usage.get("completion_tokens") or 0)
    except (httpx.HTTPError, json.JSONDecodeError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
        return result
    result.e2e = time.perf_counter() - start
    if result.output_tokens == 0:
        result.output_tokens = chunks  # server without include_usage: approximate
    result.ok = result.ttft is not None
    if not result.ok:
        result.error = "no token streamed"
    return result


BodyFactory = Callable[[int], dict[str, Any]]


async def closed_loop(
    client: httpx.AsyncClient, target: Target, n_requests: int, concurrency: int, make_body: BodyFactory
) -> tuple[list[RequestResult], float]:
    """`n_requests` requests with at most `concurrency` in flight; returns results and wall time."""
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> RequestResult:
        async with sem:
            return await stream_chat(client, target, make_body(i))

    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(i) for i in range(n_requests)))
    return list(results), time.perf_counter() - t0


@dataclass
class Background:
    """A saturating closed loop of requests that runs until stopped (for isolation workloads)."""

    client: httpx.AsyncClient
    target: Target
    concurrency: int
    make_body: BodyFactory
    results: list[RequestResult] = field(default_factory=list)
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _stop: bool = False
    _next: int = 0

    async def _worker(self) -> None:
        while not self._stop:
            i = self._next
            self._next += 1
            result = await stream_chat(self.client, self.target, self.make_body(i))
            self.results.append(result)
            if not result.ok:
                await asyncio.sleep(0.2)  # a failing server must not turn this into a busy loop

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._worker()) for _ in range(self.concurrency)]

    async def stop(self) -> None:
        """Cancels in-flight requests (the client disconnects, the server should abort them)."""
        self._stop = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def summarise(results: list[RequestResult], wall: float | None = None) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    ttft = [r.ttft for r in ok if r.ttft is not None]
    tpot = [t for r in ok if (t := r.tpot) is not None]
    e2e = [r.e2e for r in ok if r.e2e is not None]
    out_tokens = sum(r.output_tokens for r in ok)
    summary: dict[str, Any] = {
        "requests": len(results),
        "errors": len(results) - len(ok),
        "output_tokens": out_tokens,
        "prompt_tokens_mean": statistics.fmean([r.prompt_tokens for r in ok]) if ok else None,
        "ttft_p50": pct(ttft, 50),
        "ttft_p90": pct(ttft, 90),
        "tpot_p50": pct(tpot, 50),
        "tpot_p90": pct(tpot, 90),
        "e2e_p50": pct(e2e, 50),
        "e2e_p90": pct(e2e, 90),
        "first_errors": sorted({r.error for r in results if not r.ok})[:3],
    }
    if wall is not None:
        summary["wall_s"] = wall
        summary["output_tok_per_s"] = out_tokens / wall if wall > 0 else None
    return summary


def raw(results: list[RequestResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]
