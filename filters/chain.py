"""Runs the filters of one SMTP stage and turns their results into at most one reply.

Every filter gets its own timeout; a timeout or exception is a `temperror` (infrastructure fault), which
rejects temporarily unless the filter was configured to fail open — and that choice is logged and flagged in
the verdict. In observe mode the verdict records what would have happened and the reply is unchanged.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from filters.base import Connection, Filter, Mode, Outcome, Result, Stage, Transaction, Verdict
from postroom.core.replies import Reply, reply_for

log = logging.getLogger("postroom.filters")


@dataclass(frozen=True, slots=True)
class Decision:
    """A refusal: the reply to send, and which filter caused it."""

    reply: Reply
    detail: str
    filter: str
    reason: str

    def render(self) -> str:
        return self.reply.render(self.detail)


class FilterChain:
    def __init__(
        self, filters: Sequence[Filter], *, on_verdict: Callable[[Verdict], None] | None = None
    ) -> None:
        self.filters = list(filters)
        self.on_verdict = on_verdict  # e.g. metrics: every verdict, whatever the decision
        self._by_stage: dict[Stage, list[Filter]] = {
            stage: [f for f in self.filters if stage in f.stages] for stage in Stage
        }

    def for_stage(self, stage: Stage) -> list[Filter]:
        return self._by_stage[stage]

    async def run(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Decision | None:
        """Run the stage's filters in order; stop at the first enforced refusal."""
        sink = conn.verdicts if txn is None else txn.verdicts
        for flt in self._by_stage[stage]:
            started = time.perf_counter()
            result = await _run_one(flt, stage, conn, txn)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            verdict, decision = _judge(flt, stage, result, elapsed_ms)
            sink.append(verdict)
            if txn is not None and result.data:
                txn.facts.setdefault(flt.name, {}).update(result.data)
            _log_verdict(conn, txn, verdict)
            if self.on_verdict is not None:
                self.on_verdict(verdict)
            if decision is not None:
                return decision
        return None


async def _run_one(flt: Filter, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
    try:
        # asyncio.timeout, not wait_for: no extra task per check (six checks a message with cheap filters).
        async with asyncio.timeout(flt.timeout):
            return await flt.check(stage, conn, txn)
    except TimeoutError:
        return Result.temperror(f"{flt.name}.timeout", f"{flt.name} did not answer within {flt.timeout:g}s")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a filter bug or library fault is an infrastructure fault, never a pass
        log.exception("filter %s raised", flt.name)
        return Result.temperror(f"{flt.name}.error", f"{type(exc).__name__}: {exc}")


def _judge(flt: Filter, stage: Stage, result: Result, elapsed_ms: float) -> tuple[Verdict, Decision | None]:
    decision: Decision | None = None
    failed_open = False
    action = "accept"
    if result.outcome in (Outcome.FAIL, Outcome.TEMPERROR):
        temporary = result.outcome is Outcome.TEMPERROR
        if temporary and flt.fail_open:
            failed_open = True
        else:
            reply = reply_for(result.reason, temporary=temporary)
            action = "tempfail" if reply.temporary else "reject"
            if flt.mode is Mode.OBSERVE:
                action = f"observe:{action}"
            else:
                decision = Decision(reply, result.detail, flt.name, result.reason)
    verdict = Verdict(
        stage=stage.value,
        filter=flt.name,
        result=result.outcome.value,
        reason=result.reason,
        detail=result.detail,
        ms=elapsed_ms,
        mode=flt.mode.value,
        action=action,
        failed_open=failed_open,
        data=dict(result.data),
    )
    return verdict, decision


def _verdict_log_level(verdict: Verdict) -> int:
    """A pass is DEBUG: it is in the "queued" line's `verdicts`, and at several a message, one INFO line each
    cost ~5% of the listener's CPU. Anything that refused, would have refused or failed open stays visible."""
    if verdict.failed_open:
        return logging.WARNING
    if verdict.action == "accept" and verdict.result in ("pass", "skip"):
        return logging.DEBUG
    return logging.INFO


def verdict_summary(verdicts: Sequence[Verdict]) -> str:
    """'connect/dnsbl=pass mail/spf=pass ...': every verdict of a message in one short, greppable field."""
    return " ".join(f"{v.stage}/{v.filter}={v.result}" for v in verdicts)


def _log_verdict(conn: Connection, txn: Transaction | None, verdict: Verdict) -> None:
    level = _verdict_log_level(verdict)
    if not log.isEnabledFor(level):
        return
    log.log(
        level,
        "filter verdict",
        extra={
            "event": "filter",
            "session": conn.session_id,
            "queue_id": txn.queue_id if txn else "",
            "client_ip": conn.peer_ip,
            "stage": verdict.stage,
            "filter": verdict.filter,
            "result": verdict.result,
            "reason": verdict.reason,
            "action": verdict.action,
            "failed_open": verdict.failed_open,
            "ms": round(verdict.ms, 2),
        },
    )
