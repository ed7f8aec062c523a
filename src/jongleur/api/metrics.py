"""Prometheus metrics of one app (its own registry, so tests can build many apps).

Request counters and latency come from the middleware; TTFT, time per output token and token
counts from the generation path; engine gauges (running, waiting, KV usage, prefix-cache hit
rate) are read from `EngineClient.stats()` when `/metrics` is scraped.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from jongleur.engine.types import EngineStats

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("jongleur_http_requests", "HTTP requests", ["route", "status"], registry=r)
        self.request_latency = Histogram(
            "jongleur_http_request_duration_seconds", "HTTP request latency", ["route"],
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram("jongleur_time_to_first_token_seconds", "Time to first token", ["model"],
                              buckets=_LATENCY_BUCKETS, registry=r)
        self.tpot = Histogram("jongleur_time_per_output_token_seconds", "Time per output token after the "
                              "first", ["model"], buckets=_TPOT_BUCKETS, registry=r)
        self.prompt_tokens = Counter("jongleur_prompt_tokens", "Prompt tokens processed", ["model"], registry=r)
        self.generation_tokens = Counter("jongleur_generation_tokens", "Tokens generated", ["model"], registry=r)
        self.finished = Counter("jongleur_requests_finished", "Generation requests by finish reason",
                                ["model", "reason"], registry=r)
        self.running = Gauge("jongleur_num_requests_running", "Sequences running", ["model"], registry=r)
        self.waiting = Gauge("jongleur_num_requests_waiting", "Requests queued", ["model"], registry=r)
        self.kv_usage = Gauge("jongleur_kv_cache_usage_ratio", "Fraction of KV blocks in use", ["model"],
                              registry=r)
        self.prefix_hit_rate = Gauge("jongleur_prefix_cache_hit_rate", "Prefix-cache hits / queries (tokens)",
                                     ["model"], registry=r)
        self.preempted = Gauge("jongleur_preemptions", "Preemptions since start", ["model"], registry=r)
        self.inflight = Gauge("jongleur_http_requests_inflight", "HTTP requests in flight", registry=r)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.request_latency.labels(route).observe(seconds)

    def set_engine_stats(self, model: str, stats: EngineStats) -> None:
        self.running.labels(model).set(stats.running)
        self.waiting.labels(model).set(stats.waiting)
        self.kv_usage.labels(model).set(stats.kv_usage)
        self.prefix_hit_rate.labels(model).set(stats.prefix_cache_hit_rate)
        self.preempted.labels(model).set(stats.preempted_total)

    def render(self) -> bytes:
        return generate_latest(self.registry)
