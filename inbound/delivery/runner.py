"""The delivery runner: claim a spooled message, normalise it into a ticket, POST it, record the outcome.

Scheduling is fair between tenants: each tenant has its own ready queue and concurrency slots, so one slow or
failing helpdesk endpoint never holds back the others. The durable schedule lives in the spool (state files
and the deferred/ directory); the in-memory heap is only an index rebuilt at start-up.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from inbound.delivery.normalizer_pool import NormalizerPool
from inbound.delivery.webhook import Delivered, Permanent, Retry, WebhookAnswer, WebhookClient
from inbound.ticket.payload import TicketContext, build_ticket, ticket_json
from postroom.core.envelope import EnvelopeError, SpoolEnvelope, tenant_of
from postroom.core.queuerunner import QueueLimits, QueueRunner
from postroom.core.retry import RetrySchedule, retry_transient
from postroom.core.spool import (
    ACTIVE,
    CORRUPT,
    DEAD,
    DEFERRED,
    STALE_TMP_SECONDS,
    Claim,
    DeliveryState,
    NotDue,
    Spool,
)

log = logging.getLogger("postroom.delivery")


@dataclass(frozen=True)
class RunnerLimits:
    concurrency: int = 32
    per_tenant_concurrency: int = 4
    rescan_interval: float = 2.0
    max_inline_attachment_bytes: int = 10 * 1024 * 1024
    process_pool_min_bytes: int = 131072  # smaller messages are parsed in a thread
    normalize_timeout: float = 30.0  # seconds one message may take in the pool (see normalizer_pool)
    # How often tmp/ is swept of what a killed sibling's interrupted store left (Spool.remove_stale_tmp).
    tmp_sweep_interval: float = 300.0
    stale_tmp_age: float = STALE_TMP_SECONDS


@dataclass
class Prepared:
    """A claimed message and, once built, its ticket body (or why it could not be built)."""

    claim: Claim
    envelope: SpoolEnvelope
    body: bytes | None = None
    error: str = ""


def make_ticket_body(
    raw: bytes, envelope: SpoolEnvelope, max_inline_attachment_bytes: int, headers_only: str | None = None
) -> bytes:
    """Spool envelope + raw message → the exact JSON bytes POSTed. Pure: runs in a worker process.
    `headers_only`: the fallback ticket, with that reason (see inbound.ticket.normalize)."""
    context = TicketContext(
        id=envelope.id,
        received_at=envelope.received_at,
        tenant=envelope.tenant,
        mailbox=envelope.mailbox,
        mailbox_hash=envelope.mailbox_hash,
        envelope={
            "mail_from": envelope.mail_from,
            "rcpt_to": list(envelope.rcpt_to),
            "client_ip": envelope.client_ip,
            "helo": envelope.helo,
            "tls": envelope.tls,
        },
        verdicts=[v.as_dict() for v in envelope.verdicts],
        auth=envelope.auth.as_dict() if envelope.auth is not None else None,
        spam=envelope.spam.as_dict() if envelope.spam is not None else None,
        virus=envelope.virus.as_dict() if envelope.virus is not None else None,
    )
    ticket = build_ticket(
        raw, context, max_inline_attachment_bytes=max_inline_attachment_bytes, headers_only=headers_only
    )
    body: bytes = ticket_json(ticket)
    return body


class DeliveryRunner(QueueRunner):
    """The inbound queue: one attempt per worker, grouped by tenant (see postroom.core.queuerunner)."""

    def __init__(
        self,
        spool: Spool,
        webhook: WebhookClient,
        schedule: RetrySchedule,
        *,
        limits: RunnerLimits = RunnerLimits(),
        executor: Executor | None = None,
        executor_factory: Callable[[], Executor | None] | None = None,
        clock: Callable[[], float] = time.time,
        metrics: Any | None = None,
        on_outcome: Callable[[str, str, WebhookAnswer], None] | None = None,
        spool_io: Executor | None = None,
        share: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(
            spool,
            limits=QueueLimits(
                concurrency=limits.concurrency,
                rescan_interval=limits.rescan_interval,
                tmp_sweep_interval=limits.tmp_sweep_interval,
                stale_tmp_age=limits.stale_tmp_age,
            ),
            name="postroom-delivery",
            clock=clock,
            spool_io=spool_io,
            share=share,
        )
        self.webhook = webhook
        self.schedule = schedule
        self.limits = limits
        self.normalizer = NormalizerPool(
            make_ticket_body,
            timeout=limits.normalize_timeout,
            executor=executor,
            executor_factory=executor_factory,
            metrics=metrics,
        )
        self.metrics = metrics
        self.on_outcome = on_outcome  # e.g. the per-tenant circuit breaker

    def wake(self, queued: Sequence[tuple[str, str]]) -> None:
        """New messages in incoming/: (queue id, tenant) pairs, from the listener right after its 250."""
        self.enqueue(queued)

    # ---- queue hooks --------------------------------------------------------------------------------------

    def key_of(self, meta: dict[str, Any]) -> str:
        return tenant_of(meta)

    def worker_limit(self, key: str) -> int:
        return self.limits.per_tenant_concurrency

    async def work(self, key: str, batch: list[str]) -> None:
        for queue_id in batch:
            await self._attempt(queue_id, key)

    # ---- one attempt --------------------------------------------------------------------------------------

    async def _attempt(self, queue_id: str, tenant: str) -> None:
        due: float | None = None
        prepared: Prepared | None = None
        try:
            found = await self.io(self._prepare, queue_id, self.clock())
            if isinstance(found, NotDue):
                due = found.at  # a sibling worker retried it meanwhile: its new time stands
            elif found is not None:
                prepared = found
                due = await self._deliver(queue_id, tenant, prepared)
        finally:
            if prepared is not None:
                # After the file left active/ — or, if the attempt was cancelled, to mark it abandoned.
                prepared.claim.release()
            if due is None:
                self.forget(queue_id)
            else:
                self.defer(queue_id, tenant, due)

    def _prepare(self, queue_id: str, now: float) -> Prepared | NotDue | None:
        """Claim the message and, when it is small, build its ticket in the same thread hop."""
        claim = self.spool.claim(queue_id, now=now)
        if not isinstance(claim, Claim):
            return claim
        try:
            envelope = SpoolEnvelope.from_meta(claim.meta)
        except EnvelopeError as exc:  # no attempt can ever succeed: set it aside at once, not after N crashes
            self._set_aside(queue_id, str(exc))
            claim.release()
            return None
        prepared = Prepared(claim, envelope)
        if len(claim.raw) < self.limits.process_pool_min_bytes:
            # A small message parses faster here than it pickles to another process and back.
            try:
                prepared.body = make_ticket_body(claim.raw, envelope, self.limits.max_inline_attachment_bytes)
            except Exception as exc:  # handled like the pool's failures: a crash, counted
                log.exception("could not build ticket", extra={"queue_id": queue_id})
                prepared.error = f"{type(exc).__name__}: {exc}"
        return prepared

    async def _deliver(self, queue_id: str, tenant: str, prepared: Prepared) -> float | None:
        """One attempt; returns when to try again, or None when the message left the queue."""
        claim = prepared.claim
        attempt = claim.state.attempts + 1
        body = prepared.body
        if body is None and not prepared.error:
            try:
                body = await self._build_in_pool(claim.raw, prepared.envelope)
            except Exception as exc:  # a normaliser bug must not loop forever: count it like a crash
                log.exception("could not build ticket", extra={"queue_id": queue_id, "tenant": tenant})
                prepared.error = f"{type(exc).__name__}: {exc}"
        if body is None:
            return await self.io(self._record_crash, queue_id, tenant, prepared.error)
        started = time.perf_counter()
        outcome = await self.webhook.post(body, ticket_id=queue_id, tenant=tenant, attempt=attempt)
        if self.metrics is not None:
            self.metrics.webhook_attempt(_outcome_name(outcome), time.perf_counter() - started)
        if self.on_outcome is not None:
            self.on_outcome(queue_id, tenant, outcome)
        return await retry_transient(
            lambda: self.io(self._record, queue_id, tenant, claim.state, attempt, outcome),
            what="recording a delivery attempt",
        )

    @property
    def executor(self) -> Executor | None:
        """The normaliser's process pool now (it is replaced when it breaks or a message times out)."""
        return self.normalizer.executor

    async def _build_in_pool(self, raw: bytes, envelope: SpoolEnvelope) -> bytes:
        """Parsing a big MIME message is real CPU work: a process pool keeps it off the loop and its GIL."""
        return await self.normalizer.build_body(raw, envelope, self.limits.max_inline_attachment_bytes)

    def _record(
        self, queue_id: str, tenant: str, state: DeliveryState, attempt: int, outcome: WebhookAnswer
    ) -> float | None:
        now = self.clock()
        state.attempts = attempt
        if state.first_attempt_at is None:
            state.first_attempt_at = now
        extra = {"queue_id": queue_id, "tenant": tenant, "attempt": attempt}
        if isinstance(outcome, Delivered):
            log.info(
                "delivered",
                extra={**extra, "event": "delivered", "status": outcome.status, "ms": round(outcome.ms, 1)},
            )
            self.spool.finish(queue_id)
            return None
        state.last_status = outcome.status
        state.last_excerpt = outcome.excerpt
        state.last_error = outcome.reason
        state.add_history({"at": now, "attempt": attempt, "status": outcome.status, "reason": outcome.reason})
        if isinstance(outcome, Retry) and not self.schedule.exhausted(state.first_attempt_at, now):
            delay = self.schedule.delay(attempt, outcome.retry_after)
            state.next_attempt_at = now + delay
            self.spool.save_state(queue_id, state)
            self.spool.move(queue_id, ACTIVE, DEFERRED)
            log.warning(
                "delivery deferred",
                extra={
                    **extra,
                    "event": "deferred",
                    "status": outcome.status,
                    "reason": outcome.reason,
                    "retry_in": round(delay, 1),
                },
            )
            return state.next_attempt_at
        reason = outcome.reason if isinstance(outcome, Permanent) else f"retries exhausted: {outcome.reason}"
        self._dead_letter(queue_id, state, reason, now)
        log.error(
            "dead-lettered", extra={**extra, "event": "dead", "status": outcome.status, "reason": reason}
        )
        return None

    def _dead_letter(self, queue_id: str, state: DeliveryState, reason: str, now: float) -> None:
        state.dead_reason = reason
        state.dead_at = now
        state.next_attempt_at = None
        self.spool.save_state(queue_id, state)
        self.spool.move(queue_id, ACTIVE, DEAD)
        if self.metrics is not None:
            self.metrics.dead_lettered(reason.split(":", 1)[0])

    def _set_aside(self, queue_id: str, error: str) -> None:
        state = self.spool.load_state(queue_id)
        state.last_error = error
        state.add_history({"at": self.clock(), "event": "unreadable", "error": error})
        self.spool.save_state(queue_id, state)
        self.spool.move(queue_id, ACTIVE, CORRUPT)
        log.error("unreadable envelope, moved to corrupt/", extra={"queue_id": queue_id, "error": error})

    def _record_crash(self, queue_id: str, tenant: str, error: str) -> float | None:
        state = self.spool.load_state(queue_id)
        state.crashes += 1
        state.last_error = error
        now = self.clock()
        state.add_history({"at": now, "event": "crash", "error": error})
        if state.crashes >= self.spool.corrupt_after_crashes:
            self.spool.save_state(queue_id, state)
            self.spool.move(queue_id, ACTIVE, CORRUPT)
            log.error("moved to corrupt/", extra={"queue_id": queue_id, "tenant": tenant, "error": error})
            return None
        state.next_attempt_at = now + self.schedule.delay(max(state.crashes, 1))
        self.spool.save_state(queue_id, state)
        self.spool.move(queue_id, ACTIVE, DEFERRED)
        return state.next_attempt_at


def _outcome_name(outcome: WebhookAnswer) -> str:
    if isinstance(outcome, Delivered):
        return "delivered"
    return "retry" if isinstance(outcome, Retry) else "permanent"
