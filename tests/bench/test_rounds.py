"""Folding `bench/run --rounds N` into one entry per system, and the round-by-round ratios."""

from __future__ import annotations

from typing import Any

import pytest

from bench.report import markdown
from bench.rounds import median_round, per_round_ratios


def entry(system: str, rate: float, cpu: float, *, lost: int = 0, rss: float = 100.0) -> dict[str, Any]:
    return {
        "system": system,
        "profile": "cheap" if system == "postroom" else "none",
        "msgs_per_s": float(rate),
        "cpu_s_per_1000": float(cpu),
        "machine_cores_busy": 1.5,
        "lost": lost,
        "peak_rss_mb": rss,
        "accept_latency_ms": {"p50": rate / 100, "p95": 1.0, "p99": 2.0},
    }


def test_the_median_round_is_reported_whole_with_every_round_kept() -> None:
    rounds = [
        entry("postroom", 300, 4.0, rss=120),
        entry("postroom", 400, 3.5, lost=1),
        entry("postroom", 350, 3.8),
    ]
    folded = median_round(rounds)
    assert (folded["msgs_per_s"], folded["cpu_s_per_1000"]) == (350, 3.8)
    assert folded["accept_latency_ms"]["p50"] == 3.5  # the same round's latency, not a mix of rounds
    assert [r["msgs_per_s"] for r in folded["rounds"]] == [300, 400, 350]  # in the order measured
    assert folded["lost"] == 1  # nothing lost means in every round
    assert folded["peak_rss_mb"] == 120


def test_an_even_count_takes_the_lower_middle_round_and_one_round_is_unchanged() -> None:
    assert median_round([entry("aiosmtpd", 10, 1), entry("aiosmtpd", 40, 1)])["msgs_per_s"] == 10
    single = entry("aiosmtpd", 10, 1)
    assert median_round([single]) == single and "rounds" not in median_round([single])
    with pytest.raises(ValueError):
        median_round([])


def test_ratios_are_taken_round_by_round() -> None:
    # Round 2 was slow for both: per round Postroom is 0.25x, whatever the overall medians say.
    ours = median_round(
        [entry("postroom", 400, 3.0), entry("postroom", 200, 6.0), entry("postroom", 420, 3.0)]
    )
    base = median_round(
        [entry("aiosmtpd", 1600, 0.6), entry("aiosmtpd", 800, 1.2), entry("aiosmtpd", 1680, 0.6)]
    )
    assert per_round_ratios(ours, base, "msgs_per_s") == [0.25, 0.25, 0.25]
    doc = {
        "date": "d",
        "command": "bench/run --rounds 3",
        "machine": {"nproc": 2, "cpu": "x", "ram_gb": 1, "kernel": "k", "loadavg_at_start": []},
        "versions": {},
        "settings": {
            "sessions": 10, "per_session": 20, "sources": 8, "mix": "small:100", "messages": 1,
            "postfix_messages": 1, "rate": 100, "rate_messages": 1, "postfix_rate_messages": 1,
        },
        "results": [base, ours],
    }  # fmt: skip
    text = markdown(doc)
    assert "| cheap | 0.25× (0.25×–0.25×) |" in text
    assert "| postroom | cheap | 400.0 / 200.0 / 420.0 | 3.00 / 6.00 / 3.00 | 0 |" in text
