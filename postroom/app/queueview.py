"""`postroom queue`: state counts, then rows by tenant (inbound) and by destination domain (outbound)."""

from __future__ import annotations

from typing import Any

from outbound.queueview import outbound_queue_shape
from postroom.core import qshape
from postroom.core.spool import ACTIVE, CORRUPT, DEAD, DEFERRED, INCOMING, Spool

SHAPED_STATES = (INCOMING, ACTIVE, DEFERRED, DEAD, CORRUPT)


def queue_report(inbound: Spool, outbound: Spool | None, now: float) -> dict[str, Any]:
    """Everything `postroom queue` shows, JSON-ready."""
    report: dict[str, Any] = {"inbound": _spool_report(inbound, now, "tenant")}
    if outbound is not None:
        report["outbound"] = _spool_report(outbound, now, "domain")
    return report


def _spool_report(spool: Spool, now: float, key: str) -> dict[str, Any]:
    if key == "domain":
        rows = outbound_queue_shape(spool, now, states=SHAPED_STATES)
    else:
        rows = qshape.queue_shape(spool, now, key=key, states=SHAPED_STATES)
    return {
        "states": {
            state: {"count": count, "oldest_s": None if oldest is None else round(oldest, 1)}
            for state, (count, oldest) in spool.counts().items()
        },
        **qshape.shape_as_json(rows, key=key),
    }


def render_text(report: dict[str, Any]) -> str:
    parts = []
    for side, key in (("inbound", "tenant"), ("outbound", "domain")):
        if side not in report:
            continue
        section = report[side]
        lines = [f"{side.upper()} QUEUE", "STATE       COUNT   OLDEST"]
        for state, info in section["states"].items():
            oldest = "-" if info["oldest_s"] is None else _age(info["oldest_s"])
            lines.append(f"{state:<10} {info['count']:>6}   {oldest}")
        rows = [
            qshape.QueueRow(row[key], row["total"], row["buckets"], row["states"]) for row in section["rows"]
        ]
        lines += ["", qshape.render_text(rows, title=key.upper())]
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
