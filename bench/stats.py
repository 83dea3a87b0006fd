"""Percentiles of latency samples (seconds in, milliseconds out)."""

from __future__ import annotations

import math


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def summarize(seconds: list[float]) -> dict[str, float]:
    """n, p50, p90, p99, max and mean in milliseconds."""
    values = sorted(seconds)
    if not values:
        return {"n": 0}
    ms = 1000.0
    return {
        "n": len(values),
        "p50_ms": round(percentile(values, 50) * ms, 2),
        "p90_ms": round(percentile(values, 90) * ms, 2),
        "p99_ms": round(percentile(values, 99) * ms, 2),
        "max_ms": round(values[-1] * ms, 2),
        "mean_ms": round(sum(values) / len(values) * ms, 2),
    }
