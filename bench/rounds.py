"""Several rounds of the same measurements, folded into one entry per system and profile.

The machines this runs on are shared: two identical runs of one system can differ by 15%. With
`bench/run --rounds N` every system is measured N times, interleaved (round 1 measures them all, then round
2...), so a slow minute falls on one round of every system rather than on all of one system's runs. Each
system's reported figures are those of its median round (by msgs/s), whole, so its latency, CPU and RSS
belong together; `rounds` keeps every round's headline figures, and ratios between systems are taken round
by round (both measured minutes apart) before their median.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.stats import ratio

ROUND_FIELDS = ("msgs_per_s", "cpu_s_per_1000", "machine_cores_busy", "lost")


def median_round(entries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The median round's entry (the lower middle one of an even count), with every round summed up in it.

    `lost` is the sum over the rounds and `peak_rss_mb` their maximum: nothing lost means in every round.
    """
    if not entries:
        raise ValueError("no rounds to fold")
    if len(entries) == 1:
        return dict(entries[0])
    ordered = sorted(entries, key=lambda e: e.get("msgs_per_s") or 0.0)
    merged = dict(ordered[(len(ordered) - 1) // 2])
    merged["rounds"] = [{name: e.get(name) for name in ROUND_FIELDS} for e in entries]
    merged["lost"] = sum(e.get("lost") or 0 for e in entries)
    peaks = [e["peak_rss_mb"] for e in entries if e.get("peak_rss_mb") is not None]
    merged["peak_rss_mb"] = max(peaks) if peaks else None
    return merged


def per_round_ratios(entry: dict[str, Any], base: dict[str, Any], field: str) -> list[float]:
    """`field` of `entry` over `base`, round by round (rounds the two share); empty without rounds."""
    ours, theirs = entry.get("rounds") or [], base.get("rounds") or []
    pairs = zip(ours, theirs, strict=False)
    return [r for r in (ratio(a.get(field), b.get(field)) for a, b in pairs) if r is not None]
