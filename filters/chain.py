"""Runs the filters of one SMTP stage and turns their results into at most one reply.

The chain owns every filter's policy, read from its `[filters.<name>]` section: each check runs within the
section's `timeout`; a timeout or exception is a `temperror` (infrastructure fault), which refuses
temporarily unless the section says `fail_open` — and that choice is logged and flagged in the verdict. With
`mode = "observe"` the verdict records what would have happened, and neither the reply nor the message
changes. Filters only report facts.

It also calls the filters' lifecycle hooks (`filters.base.Filter`) for the app and the listener.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from filters.base import Connection, Filter, Mode, Outcome, Result, Stage, Transaction, Verdict
from filters.config import FilterSection
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


@dataclass(frozen=True, slots=True)
class ChainLink:
    """A filter and the section whose `mode`, `timeout` and `fail_open` the chain applies to it."""

    filter: Filter
    policy: FilterSection


class FilterChain:
    def __init__(
        self, links: Sequence[ChainLink], *, on_verdict: Callable[[Verdict], None] | None = None
    ) -> None:
        self.links = list(links)
        self.on_verdict = on_verdict  # e.g. metrics: every verdict, whatever the decision
        self._by_stage: dict[Stage, list[ChainLink]] = {
            stage: [link for link in self.links if stage in link.filter.stages] for stage in Stage
        }

    @property
    def filters(self) -> list[Filter]:
        return [link.filter for link in self.links]

    async def run(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Decision | None:
        """Run the stage's filters in order; stop at the first enforced refusal."""
        sink = conn.verdicts if txn is None else txn.verdicts
        for link in self._by_stage[stage]:
            started = time.perf_counter()
            result = await _run_one(link, stage, conn, txn)
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            verdict, decision = _judge(link, stage, result, elapsed_ms)
            sink.append(verdict)
            if txn is not None:
                if result.data:
                    txn.facts.setdefault(link.filter.name, {}).update(result.data)
                if result.mark_headers and link.policy.mode is Mode.ENFORCE:
                    txn.add_headers.extend(result.mark_headers)
            _log_verdict(conn, txn, verdict)
            if self.on_verdict is not None:
                self.on_verdict(verdict)
            if decision is not None:
                return decision
        return None

    async def start(self) -> None:
        """Before the first connection; a filter that cannot start stops the start-up."""
        for flt in self.filters:
            await flt.start()

    async def aclose(self) -> None:
        """At shutdown: every filter is closed, even when another one's close fails."""
        for flt in self.filters:
            try:
                await flt.aclose()
            except Exception:
                log.exception("filter close failed", extra={"filter": flt.name})

    async def session_closed(self, conn: Connection) -> None:
        for flt in self.filters:
            try:
                await flt.session_closed(conn)
            except Exception:
                log.exception("session_closed failed", extra={"filter": flt.name})

    async def record_refusal(self, conn: Connection, reason: str) -> None:
        for flt in self.filters:
            try:
                await flt.record_refusal(conn, reason)
            except Exception:
                log.exception("record_refusal failed", extra={"filter": flt.name})


async def _run_one(link: ChainLink, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
    name, timeout = link.filter.name, link.policy.timeout
    try:
        # asyncio.timeout, not wait_for: no extra task per check.
        async with asyncio.timeout(timeout):
            return await link.filter.check(stage, conn, txn)
    except TimeoutError:
        return Result.temperror(f"{name}.timeout", f"{name} did not answer within {timeout:g}s")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a filter bug or library fault is an infrastructure fault, never a pass
        log.exception("filter %s raised", name)
        return Result.temperror(f"{name}.error", f"{type(exc).__name__}: {exc}")


def _judge(
    link: ChainLink, stage: Stage, result: Result, elapsed_ms: float
) -> tuple[Verdict, Decision | None]:
    policy = link.policy
    decision: Decision | None = None
    failed_open = False
    action = "accept"
    if result.outcome in (Outcome.FAIL, Outcome.TEMPERROR):
        temporary = result.outcome is Outcome.TEMPERROR
        if temporary and policy.fail_open:
            failed_open = True
        else:
            reply = reply_for(result.reason, temporary=temporary)
            action = "tempfail" if reply.temporary else "reject"
            if policy.mode is Mode.OBSERVE:
                action = f"observe:{action}"
            else:
                decision = Decision(reply, result.detail, link.filter.name, result.reason)
    verdict = Verdict(
        stage=stage.value,
        filter=link.filter.name,
        result=result.outcome.value,
        reason=result.reason,
        detail=result.detail,
        ms=elapsed_ms,
        mode=policy.mode.value,
        action=action,
        failed_open=failed_open,
        data=dict(result.data),
    )
    return verdict, decision


def _verdict_log_level(verdict: Verdict) -> int:
    """A pass is DEBUG: it is in the "queued" line's `verdicts`, and at several a message one INFO line each
    is a measurable share of the listener's CPU. Anything that refused, would have refused or failed open
    stays visible."""
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
