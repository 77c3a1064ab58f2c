"""`postroom queue`: the inbound spool like Postfix's qshape — rows by tenant, columns by age."""

from __future__ import annotations

from typing import Any

from inbound.spool import ACTIVE, CORRUPT, DEAD, DEFERRED, INCOMING, QUEUE_STATES, Spool, queued_at_from_id

# Upper bounds in minutes, as qshape's default doubling buckets.
AGE_BUCKETS_MIN = (5, 10, 20, 40, 80, 160)
BUCKET_LABELS = [*(f"{b}m" for b in AGE_BUCKETS_MIN), "160m+"]
SHAPED_STATES = (INCOMING, ACTIVE, DEFERRED, DEAD, CORRUPT)


def _bucket(age_s: float) -> int:
    minutes = age_s / 60
    for index, bound in enumerate(AGE_BUCKETS_MIN):
        if minutes < bound:
            return index
    return len(AGE_BUCKETS_MIN)


def inbound_shape(spool: Spool, now: float) -> dict[str, Any]:
    counts = spool.counts()
    tenants: dict[str, dict[str, Any]] = {}
    for state in SHAPED_STATES:
        for queue_id in spool.ids(state):
            try:
                tenant = str(spool.read_meta(state, queue_id).get("tenant", "?"))
            except (OSError, ValueError):
                continue  # moved while we looked
            row = tenants.setdefault(
                tenant, {"tenant": tenant, "total": 0, "buckets": [0] * len(BUCKET_LABELS), "states": {}}
            )
            row["total"] += 1
            row["buckets"][_bucket(now - queued_at_from_id(queue_id))] += 1
            row["states"][state] = row["states"].get(state, 0) + 1
    return {
        "buckets": BUCKET_LABELS,
        "states": {
            state: {"count": count, "oldest_s": None if oldest is None else round(oldest, 1)}
            for state, (count, oldest) in counts.items()
            if state in QUEUE_STATES
        },
        "tenants": sorted(tenants.values(), key=lambda row: (-row["total"], row["tenant"])),
    }


def render_text(shape: dict[str, Any]) -> str:
    lines = ["STATE       COUNT   OLDEST"]
    for state, info in shape["states"].items():
        oldest = "-" if info["oldest_s"] is None else _age(info["oldest_s"])
        lines.append(f"{state:<10} {info['count']:>6}   {oldest}")
    lines.append("")
    header = f"{'TENANT':<20} {'T':>6} " + " ".join(f"{label:>6}" for label in shape["buckets"])
    lines.append(header)
    totals = [0] * len(shape["buckets"])
    grand = 0
    for row in shape["tenants"]:
        cells = " ".join(f"{n:>6}" for n in row["buckets"])
        lines.append(f"{row['tenant'][:20]:<20} {row['total']:>6} {cells}")
        totals = [a + b for a, b in zip(totals, row["buckets"], strict=True)]
        grand += row["total"]
    lines.append(f"{'TOTAL':<20} {grand:>6} " + " ".join(f"{n:>6}" for n in totals))
    return "\n".join(lines)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
