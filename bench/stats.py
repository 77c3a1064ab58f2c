"""Percentiles and small summaries, computed the same way for every system."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of already sorted values; None when there are none.

    Nearest-rank, not interpolation: p99 of 1,000 samples is the 990th value, a latency that really happened.
    """
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_ms(seconds: Sequence[float], quantiles: Sequence[int]) -> dict[str, float | None]:
    """{'p50': ms, ...} from latencies in seconds, rounded to 0.01 ms."""
    ordered = sorted(seconds)
    out: dict[str, float | None] = {}
    for q in quantiles:
        value = percentile(ordered, q)
        out[f"p{q}"] = None if value is None else round(value * 1000, 2)
    return out


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return value / base
