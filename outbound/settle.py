"""What happens to a spool entry after a delivery attempt, recipient by recipient.

Each recipient ends the attempt delivered (2xx), failed (5xx, a permanent DNS failure, suppressed, or still
deferred once `retry_max_age` has passed since the message was queued) or deferred (4xx, no MX reachable).

- Failed recipients get one DSN to the envelope sender (never to a null sender), and those a remote MX
  refused with a 5xx go on the suppression list (source "bounce", the reply as the reason).
- When every recipient is deferred, the entry's state (attempts, next attempt, last error) is written and
  the entry moves to deferred/.
- Partial success: the message file is immutable, so an entry whose recipients are only partly done is
  *rewritten*: a new entry with just the deferred recipients (same raw message, same `queued_at`, its
  `parent_id` naming the old one, the delivery state carried over) is stored and moved to deferred/, then
  the old entry is finished. Only the failed recipients are ever retried. A crash between the two steps
  re-sends the old entry in full after recovery: duplicates are possible only for what was in flight.
- Otherwise the entry is finished.

The DSN is queued, and the state written, before the entry leaves active/: a crash at any point leaves
the entry in active/, where start-up recovery finds it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from outbound.bounce_intake import queue_dsn
from outbound.dsn import FailedRecipient, enhanced_status
from outbound.sender import RecipientResult
from outbound.suppression import SuppressionError, SuppressionList
from postroom.core.retry import RetrySchedule
from postroom.core.spool import ACTIVE, DEFERRED, INCOMING, DeliveryState, Spool

log = logging.getLogger("postroom.outbound.settle")

EXPIRED_STATUS = "4.4.7"  # RFC 3463: delivery time expired


@dataclass
class ClaimedEntry:
    """A spool entry moved into active/ for this attempt."""

    queue_id: str
    meta: dict[str, Any]
    raw: bytes
    state: DeliveryState
    claimed_at: float

    @property
    def recipients(self) -> list[str]:
        return [str(r) for r in self.meta.get("rcpt_to", [])]

    @property
    def domain(self) -> str:
        return str(self.meta.get("domain", ""))

    @property
    def queued_at(self) -> float:
        queued_at = self.meta.get("queued_at")
        return float(queued_at) if isinstance(queued_at, int | float) else self.claimed_at


@dataclass(frozen=True)
class Deferral:
    queue_id: str  # the entry now in deferred/ (a new one after a partial success)
    due: float


class AttemptSettler:
    def __init__(
        self,
        spool: Spool,
        *,
        suppression: SuppressionList,
        schedule: RetrySchedule,
        reporting_mta: str,
        suppression_ttl: float | None,
        new_queue_id: Callable[[], str],
        clock: Callable[[], float] = time.time,
        on_settled: Callable[[str, str], None] | None = None,
    ) -> None:
        # (destination domain, "delivered" | "deferred" | "bounced") per recipient, e.g. for metrics.
        self._on_settled = on_settled
        self._spool = spool
        self._suppression = suppression
        self._schedule = schedule
        self._reporting_mta = reporting_mta
        self._suppression_ttl = suppression_ttl
        self._new_queue_id = new_queue_id
        self._clock = clock

    async def settle(
        self, entry: ClaimedEntry, results: Sequence[RecipientResult], relay: str
    ) -> Deferral | None:
        """Record the attempt; where and when the entry is retried, or None when it left the queue."""
        now = self._clock()
        deferred = [r for r in results if not r.delivered and not r.permanent]
        expired = bool(deferred) and self._schedule.exhausted(entry.queued_at, now)
        failures = [_failure(r, relay) for r in results if r.permanent]
        if expired:
            failures += [
                _failure(r, relay, status=EXPIRED_STATUS, prefix="delivery time expired: ") for r in deferred
            ]
            deferred = []
        for result in results:
            outcome = "deferred" if result in deferred else None
            _log_result(entry, result, relay, outcome)
            if self._on_settled is not None:
                self._on_settled(entry.domain, outcome or ("delivered" if result.delivered else "bounced"))
        await self._suppress(entry, [r for r in results if r.permanent and r.remote])
        if failures:
            await queue_dsn(
                self._spool,
                original_meta=entry.meta,
                original_raw=entry.raw,
                failures=failures,
                reporting_mta=self._reporting_mta,
                now=now,
            )
        if not deferred:
            await asyncio.to_thread(self._spool.finish, entry.queue_id)
            return None
        whole = len(deferred) == len(results)
        target_id = entry.queue_id if whole else self._new_queue_id()
        return await asyncio.to_thread(self._defer, entry, deferred, target_id, now)

    def _defer(
        self, entry: ClaimedEntry, deferred: list[RecipientResult], target_id: str, now: float
    ) -> Deferral:
        state = entry.state
        state.attempts += 1
        if state.first_attempt_at is None:
            state.first_attempt_at = entry.claimed_at
        delay = self._schedule.delay(state.attempts)
        state.next_attempt_at = now + delay
        worst = deferred[0]
        state.last_status = worst.code
        state.last_error = worst.diagnostic
        state.add_history({"at": now, "attempt": state.attempts, "deferred": [r.rcpt for r in deferred]})
        if target_id == entry.queue_id:
            self._spool.save_state(entry.queue_id, state)
            self._spool.move(entry.queue_id, ACTIVE, DEFERRED)
        else:
            rest = {
                **entry.meta,
                "id": target_id,
                "rcpt_to": [r.rcpt for r in deferred],
                "parent_id": entry.queue_id,
            }
            self._spool.store([(rest, entry.raw)])
            self._spool.save_state(target_id, state)
            self._spool.move(target_id, INCOMING, DEFERRED)
            self._spool.finish(entry.queue_id)
        log.info(
            "entry deferred",
            extra={
                "queue_id": target_id,
                "domain": entry.domain,
                "parent_id": entry.queue_id,
                "attempt": state.attempts,
                "retry_in": round(delay, 1),
            },
        )
        return Deferral(target_id, state.next_attempt_at)

    async def _suppress(self, entry: ClaimedEntry, refused: list[RecipientResult]) -> None:
        for result in refused:
            try:
                await self._suppression.add(
                    result.rcpt, reason=result.diagnostic, source="bounce", ttl=self._suppression_ttl
                )
            except SuppressionError as exc:
                log.error(
                    "could not add a hard bounce to the suppression list",
                    extra={
                        "queue_id": entry.queue_id,
                        "domain": entry.domain,
                        "rcpt": result.rcpt,
                        "error": str(exc),
                    },
                )


def _failure(result: RecipientResult, relay: str, *, status: str = "", prefix: str = "") -> FailedRecipient:
    return FailedRecipient(
        rcpt=result.rcpt,
        status=status or enhanced_status(result.code, result.message),
        diagnostic=prefix + result.diagnostic,
        remote_mta=relay.partition("[")[0] if result.remote else "",  # the name, as RFC 3464 has it
        remote=result.remote and not prefix,
    )


def _log_result(entry: ClaimedEntry, result: RecipientResult, relay: str, outcome: str | None) -> None:
    status = outcome or ("sent" if result.delivered else "bounced")
    extra = {
        "queue_id": entry.queue_id,
        "domain": entry.domain,
        "rcpt": result.rcpt,
        "relay": relay or "none",
        "status": status,
        "reply": result.diagnostic,
    }
    level = logging.INFO if result.delivered else logging.WARNING
    log.log(level, "recipient %s", status, extra=extra)
