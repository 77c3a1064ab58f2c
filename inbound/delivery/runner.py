"""The delivery runner: claim a spooled message, normalise it into a ticket, POST it, record the outcome.

Scheduling is fair between tenants: each tenant has its own ready queue and concurrency slots, so one slow or
failing helpdesk endpoint never holds back the others. The durable schedule lives in the spool (state files
and the deferred/ directory); the in-memory heap is only an index rebuilt at start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from inbound.delivery.normalizer_pool import NormalizerPool
from inbound.delivery.webhook import Delivered, Outcome, Permanent, Retry, WebhookClient
from inbound.ticket.payload import TicketContext, build_ticket, ticket_json
from postroom.core.retry import RetrySchedule
from postroom.core.spool import (
    ACTIVE,
    CORRUPT,
    DEAD,
    DEFERRED,
    INCOMING,
    STALE_TMP_SECONDS,
    Claim,
    DeliveryState,
    NotDue,
    Spool,
    SpoolError,
)
from postroom.core.taskdrain import drain_tasks

log = logging.getLogger("postroom.delivery")
T = TypeVar("T")


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
    body: bytes | None = None
    error: str = ""


def make_ticket_body(
    raw: bytes, meta: dict[str, Any], max_inline_attachment_bytes: int, headers_only: str | None = None
) -> bytes:
    """Spool meta + raw message → the exact JSON bytes POSTed. Pure: runs in a worker process.
    `headers_only`: the fallback ticket, with that reason (see inbound.ticket.normalize)."""
    facts = meta.get("facts") or {}
    context = TicketContext(
        id=meta["id"],
        received_at=meta["received_at"],
        tenant=meta["tenant"],
        mailbox=meta["mailbox"],
        mailbox_hash=meta.get("mailbox_hash"),
        envelope={
            "mail_from": meta.get("mail_from", ""),
            "rcpt_to": list(meta.get("rcpt_to", [])),
            "client_ip": meta.get("client_ip", ""),
            "helo": meta.get("helo", ""),
            "tls": bool(meta.get("tls", False)),
        },
        verdicts=list(meta.get("verdicts", [])),
        auth=ticket_auth(facts),
        spam=_nested(facts, "rspamd", "spam"),
        virus=_nested(facts, "clamav", "virus"),
    )
    ticket = build_ticket(
        raw, context, max_inline_attachment_bytes=max_inline_attachment_bytes, headers_only=headers_only
    )
    body: bytes = ticket_json(ticket)
    return body


def ticket_auth(facts: dict[str, Any]) -> dict[str, Any] | None:
    """`auth` for the ticket: the DKIM/DMARC filter's full result, else what SPF alone found."""
    auth = facts.get("auth")
    if isinstance(auth, dict):
        return auth
    spf = facts.get("spf")
    if isinstance(spf, dict):
        return {"spf": spf, "dkim": [], "dmarc": None}
    return None


def _nested(facts: dict[str, Any], filter_name: str, key: str) -> Any:
    """Filters keep their data under their own name (see filters.chain); e.g. facts["clamav"]["virus"]."""
    data = facts.get(filter_name)
    return data.get(key) if isinstance(data, dict) else None


class DeliveryRunner:
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
        on_outcome: Callable[[str, str, Outcome], None] | None = None,
        spool_io: Executor | None = None,
        share: tuple[int, int] | None = None,
    ) -> None:
        self.spool = spool
        # (this worker's index, number of workers) when sibling processes use the same spool: at start only
        # abandoned attempts are recovered, and a rescan takes only this worker's share of what it finds.
        self.share = share
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
        self.clock = clock
        self.metrics = metrics
        self.on_outcome = on_outcome  # e.g. the per-tenant circuit breaker
        self.spool_io = spool_io  # threads for spool file work, apart from filter threads
        self._ready: dict[str, deque[str]] = {}
        self._known: set[str] = set()  # ids queued in memory or in flight: never attempted twice at once
        self._deferred: list[tuple[float, str, str]] = []  # (due, queue id, tenant)
        self._active: dict[str, int] = {}
        self._active_total = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._stopping = False

    # ---- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self._io(self.spool.recover if self.share is None else self.spool.recover_abandoned)
        await self._scan()
        self._main = asyncio.create_task(self._run(), name="postroom-delivery")

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop taking new work, let attempts in flight finish (bounded), leave everything else spooled."""
        self._stopping = True
        self._wakeup.set()
        if self._main is not None:
            await self._main
        await drain_tasks(self._tasks, timeout)

    def wake(self, queued: Sequence[tuple[str, str]]) -> None:
        """New messages in incoming/: (queue id, tenant) pairs, from the listener right after its 250."""
        for queue_id, tenant in queued:
            self._enqueue(queue_id, tenant)
        self._wakeup.set()

    @property
    def in_flight(self) -> int:
        return self._active_total

    async def _io(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.spool_io, func, *args)

    # ---- scheduling ---------------------------------------------------------------------------------------

    def _enqueue(self, queue_id: str, tenant: str) -> None:
        if queue_id in self._known:
            return
        self._known.add(queue_id)
        self._ready.setdefault(tenant, deque()).append(queue_id)

    async def _scan(self) -> None:
        """Pick up what is on disk but not in memory: start-up, replays from the CLI, other writers."""
        found = await self._io(self._scan_disk)
        for state, queue_id, tenant, due in found:
            if queue_id in self._known:
                continue
            if state == INCOMING:
                self._enqueue(queue_id, tenant)
            else:
                self._known.add(queue_id)
                heapq.heappush(self._deferred, (due, queue_id, tenant))

    async def _sweep_tmp(self) -> None:
        try:
            await self._io(self.spool.remove_stale_tmp, self.limits.stale_tmp_age)
        except OSError as exc:  # tmp/ unreadable: the next sweep tries again; delivery goes on meanwhile
            log.warning("cannot sweep the spool's tmp/", extra={"error": str(exc)})

    def _scan_disk(self) -> list[tuple[str, str, str, float]]:
        found = []
        for state in (INCOMING, DEFERRED):
            for queue_id in self.spool.ids(state):
                if queue_id in self._known or not self.is_mine(queue_id):
                    continue
                try:
                    tenant = str(self.spool.read_meta(state, queue_id).get("tenant", ""))
                except (OSError, SpoolError, ValueError):
                    continue  # moved meanwhile, or unreadable: the attempt itself will sort it out
                due = 0.0
                if state == DEFERRED:
                    due = self.spool.load_state(queue_id).next_attempt_at or 0.0
                found.append((state, queue_id, tenant, due))
        return found

    def is_mine(self, queue_id: str) -> bool:
        """Workers split what a rescan finds by id, so each indexes and retries only its share (claims make
        a double attempt impossible anyway; this keeps N workers from each holding the whole deferred
        queue in memory). What a worker's own listener queued reaches it through `wake`, whoever's it is."""
        if self.share is None:
            return True
        index, count = self.share
        return zlib.crc32(queue_id.encode()) % count == index

    async def _run(self) -> None:
        last_scan = last_sweep = self.clock()
        while not self._stopping:
            now = self.clock()
            while self._deferred and self._deferred[0][0] <= now:
                _, queue_id, tenant = heapq.heappop(self._deferred)
                self._ready.setdefault(tenant, deque()).append(queue_id)
            self._dispatch()
            if now - last_sweep >= self.limits.tmp_sweep_interval:
                last_sweep = now
                await self._sweep_tmp()
            if now - last_scan >= self.limits.rescan_interval:
                last_scan = now
                await self._scan()
                continue
            timeout = self.limits.rescan_interval
            if self._deferred:
                timeout = min(timeout, max(0.0, self._deferred[0][0] - now))
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(timeout, 0.01))

    def _dispatch(self) -> None:
        """Start attempts round-robin over tenants, within the global and per-tenant limits."""
        progressed = True
        while progressed and self._active_total < self.limits.concurrency:
            progressed = False
            for tenant in list(self._ready):
                queue = self._ready[tenant]
                if not queue:
                    del self._ready[tenant]
                    continue
                if self._active.get(tenant, 0) >= self.limits.per_tenant_concurrency:
                    continue
                if self._active_total >= self.limits.concurrency:
                    break
                queue_id = queue.popleft()
                self._active[tenant] = self._active.get(tenant, 0) + 1
                self._active_total += 1
                task = asyncio.create_task(self._attempt(queue_id, tenant))
                self._tasks.add(task)
                task.add_done_callback(self._attempt_done(tenant, queue_id))
                progressed = True

    def _attempt_done(self, tenant: str, queue_id: str) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._active[tenant] -= 1
            self._active_total -= 1
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "delivery attempt failed unexpectedly",
                    exc_info=task.exception(),
                    extra={"queue_id": queue_id, "tenant": tenant},
                )
            self._wakeup.set()

        return done

    # ---- one attempt --------------------------------------------------------------------------------------

    async def _attempt(self, queue_id: str, tenant: str) -> None:
        due: float | None = None
        prepared: Prepared | None = None
        try:
            found = await self._io(self._prepare, queue_id, self.clock())
            if isinstance(found, NotDue):
                due = found.at  # a sibling worker retried it meanwhile: its new time stands
            elif found is not None:
                prepared = found
                due = await self._deliver(queue_id, tenant, prepared)
        finally:
            if prepared is not None:
                # After the file left active/ — or, if the attempt was cancelled, to mark it abandoned.
                prepared.claim.release()
            # Heap and id set are touched only here, on the event loop thread.
            if due is None:
                self._known.discard(queue_id)
            else:
                heapq.heappush(self._deferred, (due, queue_id, tenant))

    def _prepare(self, queue_id: str, now: float) -> Prepared | NotDue | None:
        """Claim the message and, when it is small, build its ticket in the same thread hop."""
        claim = self.spool.claim(queue_id, now=now)
        if not isinstance(claim, Claim):
            return claim
        prepared = Prepared(claim)
        if len(claim.raw) < self.limits.process_pool_min_bytes:
            # ~0.1 ms of parsing: cheaper here than pickling to another process and back.
            try:
                prepared.body = make_ticket_body(
                    claim.raw, claim.meta, self.limits.max_inline_attachment_bytes
                )
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
                body = await self._build_in_pool(claim.raw, claim.meta)
            except Exception as exc:  # a normaliser bug must not loop forever: count it like a crash
                log.exception("could not build ticket", extra={"queue_id": queue_id, "tenant": tenant})
                prepared.error = f"{type(exc).__name__}: {exc}"
        if body is None:
            return await self._io(self._record_crash, queue_id, tenant, prepared.error)
        started = time.perf_counter()
        outcome = await self.webhook.post(body, ticket_id=queue_id, tenant=tenant, attempt=attempt)
        if self.metrics is not None:
            self.metrics.webhook_attempt(_outcome_name(outcome), time.perf_counter() - started)
        if self.on_outcome is not None:
            self.on_outcome(queue_id, tenant, outcome)
        return await self._io(self._record, queue_id, tenant, claim.state, attempt, outcome)

    @property
    def executor(self) -> Executor | None:
        """The normaliser's process pool now (it is replaced when it breaks or a message times out)."""
        return self.normalizer.executor

    async def _build_in_pool(self, raw: bytes, meta: dict[str, Any]) -> bytes:
        """Parsing a big MIME message is real CPU work: a process pool keeps it off the loop and its GIL."""
        return await self.normalizer.build_body(raw, meta, self.limits.max_inline_attachment_bytes)

    def _record(
        self, queue_id: str, tenant: str, state: DeliveryState, attempt: int, outcome: Outcome
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


def _outcome_name(outcome: Outcome) -> str:
    if isinstance(outcome, Delivered):
        return "delivered"
    return "retry" if isinstance(outcome, Retry) else "permanent"
