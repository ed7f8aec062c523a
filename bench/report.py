"""Side-by-side tables of a benchmark run: one column per system, ratios first system / second."""

from __future__ import annotations

from typing import Any

# (key, label, scale, higher_is_better)
CHAT_ROWS = [
    ("output_tok_per_s", "output tok/s", 1.0, True),
    ("ttft_p50", "TTFT p50 (ms)", 1e3, False),
    ("ttft_p90", "TTFT p90 (ms)", 1e3, False),
    ("tpot_p50", "TPOT p50 (ms)", 1e3, False),
    ("tpot_p90", "TPOT p90 (ms)", 1e3, False),
    ("e2e_p50", "E2E p50 (s)", 1.0, False),
    ("e2e_p90", "E2E p90 (s)", 1.0, False),
    ("prompt_tokens_mean", "prompt tokens (mean)", 1.0, None),
    ("errors", "errors", 1.0, None),
]


def _cell(value: Any, scale: float) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    v = value * scale
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"


def _ratio(a: Any, b: Any) -> str:
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)) or not b:
        return "-"
    return f"{a / b:.2f}x"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def chat_table(result: dict[str, Any], labels: list[str]) -> str:
    header = ["c", "metric", *labels] + ([f"{labels[0]}/{labels[1]}"] if len(labels) == 2 else [])
    rows = []
    for conc, by_label in result.items():
        for key, name, scale, _ in CHAT_ROWS:
            vals = [by_label[lab].get(key) for lab in labels]
            row = [conc, name, *(_cell(v, scale) for v in vals)]
            if len(labels) == 2:
                row.append(_ratio(vals[0], vals[1]) if key != "errors" else "")
            rows.append(row)
    return table(header, rows)


def decode_fraction(result: dict[str, Any], weight_bytes: dict[str, float | None], bw_gbps: float) -> str:
    """Single-stream decode speed (1 / TPOT p50 at c=1) against the memory-bandwidth bound."""
    if "1" not in result:
        return ""
    lines = []
    for label, wb in weight_bytes.items():
        tpot = result["1"][label].get("tpot_p50")
        if not wb or not tpot:
            continue
        bound = bw_gbps * 1e9 / wb
        lines.append(f"{label}: c=1 decode {1 / tpot:.1f} tok/s = {100 / tpot / bound:.0f}% of the bound "
                     f"{bound:.1f} tok/s ({wb / 1e6:.0f} MB/step at {bw_gbps:.1f} GB/s)")
    return "\n".join(lines)


def ttft_pair_table(result: dict[str, Any], labels: list[str], first: str, second: str) -> str:
    """Rows: TTFT p50/p90 of the two phases of a workload (cold/warm, idle/loaded) for each system."""
    header = ["system", f"TTFT p50 {first} (ms)", f"TTFT p50 {second} (ms)", f"{second}/{first}",
              f"TTFT p90 {second} (ms)", "errors"]
    rows = []
    for lab in labels:
        a, b = result[lab][first], result[lab][second]
        rows.append([lab, _cell(a["ttft_p50"], 1e3), _cell(b["ttft_p50"], 1e3),
                     _ratio(b["ttft_p50"], a["ttft_p50"]), _cell(b["ttft_p90"], 1e3),
                     str(a["errors"] + b["errors"])])
    return table(header, rows)
