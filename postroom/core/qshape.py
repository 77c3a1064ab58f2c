"""A queue's shape, like Postfix's qshape: one row per key (tenant or destination domain), columns by age.

Age is counted from when the message was first queued (`queued_at` in its meta, else the time in its id), so
an entry rewritten after a partial delivery keeps its original age. Ages fall into qshape's doubling buckets;
each row also counts its entries per spool state. The first row is the TOTAL. Reading blocks on disk (one
small read per entry): async callers run it in a thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from postroom.core.spool import Spool, SpoolError, queued_at_from_id

# Upper bounds of the age buckets, in minutes; the last bucket is everything older.
AGE_BUCKET_MINUTES = (5, 10, 20, 40, 80, 160)
BUCKET_LABELS = ("0-5m", "5-10m", "10-20m", "20-40m", "40-80m", "80-160m", "160m+")
TOTAL = "TOTAL"


@dataclass
class QueueRow:
    name: str
    total: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(BUCKET_LABELS))
    states: dict[str, int] = field(default_factory=dict)

    def add(self, state: str, age_seconds: float) -> None:
        self.total += 1
        self.buckets[age_bucket(age_seconds)] += 1
        self.states[state] = self.states.get(state, 0) + 1


def age_bucket(age_seconds: float) -> int:
    minutes = age_seconds / 60
    for index, bound in enumerate(AGE_BUCKET_MINUTES):
        if minutes < bound:
            return index
    return len(AGE_BUCKET_MINUTES)


def queue_shape(spool: Spool, now: float, *, key: str, states: Sequence[str]) -> list[QueueRow]:
    """TOTAL first, then one row per value of meta[`key`], the busiest first."""
    total = QueueRow(TOTAL)
    rows: dict[str, QueueRow] = {}
    for state in states:
        for queue_id in spool.ids(state):
            try:
                meta = spool.read_meta(state, queue_id)
            except (OSError, SpoolError, ValueError):
                continue  # moved on while we looked
            name = str(meta.get(key) or "?")
            queued_at = meta.get("queued_at")
            since = float(queued_at) if isinstance(queued_at, int | float) else queued_at_from_id(queue_id)
            age = max(0.0, now - since)
            rows.setdefault(name, QueueRow(name)).add(state, age)
            total.add(state, age)
    return [total, *sorted(rows.values(), key=lambda row: (-row.total, row.name))]


def render_text(rows: Sequence[QueueRow], *, title: str, width: int = 24) -> str:
    """A qshape-like table; per-state counts follow the age columns."""
    states = sorted({state for row in rows for state in row.states})
    head = [f"{title:<{width}}", f"{'T':>6}", *(f"{label:>7}" for label in BUCKET_LABELS)]
    head += [f"{state:>9}" for state in states]
    lines = [" ".join(head)]
    for row in rows:
        cells = [f"{row.name[:width]:<{width}}", f"{row.total:>6}", *(f"{n:>7}" for n in row.buckets)]
        cells += [f"{row.states.get(state, 0):>9}" for state in states]
        lines.append(" ".join(cells))
    return "\n".join(lines)


def shape_as_json(rows: Sequence[QueueRow], *, key: str) -> dict[str, Any]:
    """A JSON-ready form: the bucket labels and the rows (TOTAL first), each naming its `key`."""
    return {
        "buckets": list(BUCKET_LABELS),
        "rows": [
            {key: row.name, "total": row.total, "buckets": row.buckets, "states": row.states} for row in rows
        ],
    }
