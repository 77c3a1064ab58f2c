"""The outbound queue's shape like Postfix's qshape: rows by destination domain, columns by age."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from postroom.core import qshape
from postroom.core.qshape import BUCKET_LABELS, TOTAL, QueueRow, age_bucket
from postroom.core.spool import ACTIVE, DEFERRED, INCOMING, Spool

LIVE_STATES = (INCOMING, ACTIVE, DEFERRED)
__all__ = ["BUCKET_LABELS", "LIVE_STATES", "TOTAL", "QueueRow", "age_bucket", "outbound_queue_shape"]


def outbound_queue_shape(spool: Spool, now: float, states: Sequence[str] = LIVE_STATES) -> list[QueueRow]:
    """TOTAL first, then one row per destination domain, the busiest first."""
    return qshape.queue_shape(spool, now, key="domain", states=states)


def render_text(rows: Sequence[QueueRow], *, width: int = 24) -> str:
    return qshape.render_text(rows, title="DOMAIN", width=width)


def shape_as_json(rows: Sequence[QueueRow]) -> dict[str, Any]:
    return qshape.shape_as_json(rows, key="domain")
