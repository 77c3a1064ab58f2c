"""The outbound delivery runner: spool entries in, SMTP sessions out, within the scheduler's limits.

Entries wait in memory per destination domain (the submission side stores one entry per message and
recipient domain). For each destination with work, up to its concurrency limit of worker tasks run; each
worker takes a connection slot from the scheduler, then a batch of up to `max_messages_per_connection`
entries, claims them (rename into active/, the durable record of the attempt), delivers them over one
session and settles every recipient (see outbound.settle). Entries are claimed only when a connection slot
is held, so a crash interrupts at most the batches in flight: start-up recovery returns those to the
queue, and nothing else was touched.

Deferred entries become due at `next_attempt_at` from their state file; the runner keeps the due times it
wrote itself and reads the others once, when it first sees them (start-up, other writers). `wake()` after
the submission server queues a message makes delivery start at once; a periodic rescan catches the rest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Callable, Sequence

import dns.asyncresolver

from outbound.config import RelaySettings
from outbound.mx import MxLookupError, resolve_targets
from outbound.scheduler import DeliveryScheduler, Destination
from outbound.sender import Envelope, RecipientResult, SessionSettings, deliver
from outbound.settle import AttemptSettler, ClaimedEntry, Deferral
from outbound.suppression import SuppressionError, SuppressionList
from outbound.verp import make_return_path
from postroom.core.retry import RetrySchedule
from postroom.core.spool import ACTIVE, CORRUPT, DEFERRED, INCOMING, Spool, SpoolError, new_queue_id
from postroom.core.taskdrain import drain_tasks

log = logging.getLogger("postroom.outbound.runner")

RETRY_JITTER = 0.2  # spreads the retries of messages that failed together (an MX outage)
DEFAULT_RESCAN_INTERVAL = 30.0


class OutboundRunner:
    def __init__(
        self,
        cfg: RelaySettings,
        *,
        spool: Spool,
        suppression: SuppressionList,
        resolver: dns.asyncresolver.Resolver,
        clock: Callable[[], float] = time.time,
        scheduler: DeliveryScheduler | None = None,
        rescan_interval: float = DEFAULT_RESCAN_INTERVAL,
        rng: random.Random | None = None,
        on_result: Callable[[str, str], None] | None = None,
    ) -> None:
        out = cfg.outbound
        # (destination domain, "delivered" | "deferred" | "bounced") per recipient attempt, e.g. for metrics.
        self.on_result = on_result
        self.spool = spool
        self.scheduler = scheduler or DeliveryScheduler(out)
        self._cfg = out
        self._suppression = suppression
        self._resolver = resolver
        self._clock = clock
        self._rescan_interval = rescan_interval
        self._rng = rng or random.Random()
        self._settings = SessionSettings(
            helo_name=out.helo_name or cfg.smtp.hostname,
            connect_timeout=out.connect_timeout,
            command_timeout=out.command_timeout,
        )
        # The VERP MAC key is derived from the webhook secret (outbound has no secret of its own).
        self._verp_secret = cfg.webhook.secret
        self._settler = AttemptSettler(
            spool,
            suppression=suppression,
            schedule=RetrySchedule(
                initial=out.retry_initial,
                max_interval=max(out.retry_max_interval, out.retry_initial),
                max_age=out.retry_max_age,
                jitter=RETRY_JITTER,
                rng=self._rng,
            ),
            reporting_mta=self._settings.helo_name,
            suppression_ttl=out.suppression_ttl or None,
            new_queue_id=self._reserve_queue_id,
            clock=clock,
        )
        self._ready: dict[str, collections.deque[str]] = {}
        self._known: set[str] = set()  # queued in memory, in flight or deferred-and-watched
        self._due: dict[str, tuple[float, str]] = {}  # deferred id -> (next attempt, domain)
        self._workers: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._main: asyncio.Task[None] | None = None
        self._stopping = False

    # ---- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        await asyncio.to_thread(self.spool.recover)
        self._main = asyncio.create_task(self._run(), name="postroom-outbound")

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop taking work; let sessions in flight finish (bounded); everything else stays spooled."""
        self._stopping = True
        self._wakeup.set()
        if self._main is not None:
            await self._main
        await drain_tasks(self._tasks, timeout)

    def wake(self, queue_ids: Sequence[str] = ()) -> None:
        """Something was queued: look at incoming/ now rather than at the next rescan.

        Fits the submission server's `on_queued` hook; the ids are not needed, the scan finds the entries.
        """
        self._wakeup.set()

    @property
    def idle(self) -> bool:
        """Nothing in memory waiting or in flight (deferred entries may still be due later)."""
        return not self._tasks and not any(self._ready.values())

    # ---- finding work -------------------------------------------------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            self._wakeup.clear()
            try:
                await self._scan()
            except (OSError, SpoolError):
                log.exception("cannot scan the outbound spool")
            self._dispatch()
            await self._sleep_until_due()

    async def _sleep_until_due(self) -> None:
        timeout = self._rescan_interval
        if self._due:
            earliest = min(due for due, _ in self._due.values())
            timeout = min(timeout, max(0.0, earliest - self._clock()))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout=max(timeout, 0.01))

    async def _scan(self) -> None:
        found = await asyncio.to_thread(self._scan_disk, frozenset(self._known))
        for queue_id, domain, due in found:
            if queue_id in self._known:
                continue  # claimed or rewritten while the scan ran
            self._known.add(queue_id)
            if due is None:
                self._ready.setdefault(domain, collections.deque()).append(queue_id)
            else:
                self._due[queue_id] = (due, domain)
        now = self._clock()
        for queue_id, (due, domain) in list(self._due.items()):
            if due <= now:
                del self._due[queue_id]
                self._ready.setdefault(domain, collections.deque()).append(queue_id)

    def _scan_disk(self, known: frozenset[str]) -> list[tuple[str, str, float | None]]:
        """(id, domain, due) for entries not yet in memory; due is None for incoming/."""
        found: list[tuple[str, str, float | None]] = []
        for state in (INCOMING, DEFERRED):
            for queue_id in self.spool.ids(state):
                if queue_id in known:
                    continue
                try:
                    domain = str(self.spool.read_meta(state, queue_id).get("domain", ""))
                except OSError:
                    continue  # moved meanwhile; the next scan sees where it went
                except (SpoolError, ValueError):
                    domain = ""  # unreadable: the claim moves it to corrupt/
                due = None if state == INCOMING else (self.spool.load_state(queue_id).next_attempt_at or 0.0)
                found.append((queue_id, domain.lower(), due))
        return found

    def _dispatch(self) -> None:
        batch = self._cfg.max_messages_per_connection
        for domain, queue in list(self._ready.items()):
            if not queue:
                del self._ready[domain]
                continue
            wanted = min(self.scheduler.destination(domain).concurrency, -(-len(queue) // batch))
            while self._workers.get(domain, 0) < wanted:
                self._workers[domain] = self._workers.get(domain, 0) + 1
                task = asyncio.create_task(self._worker(domain), name=f"outbound:{domain}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _reserve_queue_id(self) -> str:
        """A fresh id for a rewritten entry, known before it exists on disk so no scan picks it up early."""
        queue_id = new_queue_id(self._clock)
        self._known.add(queue_id)
        return queue_id

    # ---- delivering ---------------------------------------------------------------------------------------

    async def _worker(self, domain: str) -> None:
        try:
            while not self._stopping and self._ready.get(domain):
                async with self.scheduler.connection_slot(domain) as destination:
                    queue = self._ready.get(domain)
                    if not queue:
                        break
                    count = min(len(queue), self._cfg.max_messages_per_connection)
                    batch = [queue.popleft() for _ in range(count)]
                    try:
                        await self._attempt(destination, batch)
                    except (OSError, SpoolError):
                        # The spool is failing (disk full, I/O error): whatever was claimed stays in
                        # active/ for start-up recovery; the rest is found again by the next scan.
                        log.exception("outbound spool error", extra={"domain": domain, "queue_ids": batch})
                        self._known.difference_update(batch)
        finally:
            self._workers[domain] -= 1
            self._wakeup.set()

    async def _attempt(self, destination: Destination, batch: list[str]) -> None:
        entries = await asyncio.to_thread(self._claim, batch)
        for queue_id in set(batch) - {entry.queue_id for entry in entries}:
            self._known.discard(queue_id)  # delivered or removed by someone else meanwhile
        if not entries:
            return
        try:
            results, relay = await self._deliver(destination, entries)
        except Exception as exc:  # a bug must defer, never lose, the batch
            log.exception("delivery attempt failed", extra={"domain": destination.domain})
            error = f"4.3.0 internal error: {type(exc).__name__}"
            results = {
                e.queue_id: [RecipientResult(r, 451, error, remote=False) for r in e.recipients]
                for e in entries
            }
            relay = ""
        for entry in entries:
            try:
                deferral = await self._settler.settle(entry, results[entry.queue_id], relay)
            except (OSError, SpoolError):
                log.exception(
                    "cannot record a delivery attempt",
                    extra={"queue_id": entry.queue_id, "domain": entry.domain},
                )
                continue  # stays in active/ (and in _known): recovered at the next start
            self._known.discard(entry.queue_id)
            if deferral is not None:
                self._watch(deferral, entry.domain)

    def _watch(self, deferral: Deferral, domain: str) -> None:
        self._known.add(deferral.queue_id)
        self._due[deferral.queue_id] = (deferral.due, domain)

    def _claim(self, batch: Sequence[str]) -> list[ClaimedEntry]:
        claimed: list[ClaimedEntry] = []
        for queue_id in batch:
            for source in (INCOMING, DEFERRED):
                if self.spool.move(queue_id, source, ACTIVE):
                    entry = self._read_claimed(queue_id)
                    if entry is not None:
                        claimed.append(entry)
                    break
        return claimed

    def _read_claimed(self, queue_id: str) -> ClaimedEntry | None:
        try:
            message = self.spool.read(ACTIVE, queue_id)
            if not isinstance(message.meta.get("rcpt_to"), list):
                raise SpoolError("no recipient list in the envelope")
        except (SpoolError, ValueError) as exc:
            # Unreadable: retrying cannot help, and a human should see it.
            log.error(
                "unreadable outbound entry moved to corrupt/", extra={"queue_id": queue_id, "error": str(exc)}
            )
            self.spool.move(queue_id, ACTIVE, CORRUPT)
            return None
        return ClaimedEntry(
            queue_id, message.meta, message.raw, self.spool.load_state(queue_id), self._clock()
        )

    async def _deliver(
        self, destination: Destination, entries: list[ClaimedEntry]
    ) -> tuple[dict[str, list[RecipientResult]], str]:
        """Per-recipient results for every claimed entry, and the relay that answered."""
        results: dict[str, list[RecipientResult]] = {}
        sendable: list[tuple[ClaimedEntry, list[str]]] = []
        for entry in entries:
            allowed, refused = await self._check_suppression(entry)
            results[entry.queue_id] = refused
            if allowed:
                sendable.append((entry, allowed))
        if not sendable:
            return results, ""
        try:
            targets = await resolve_targets(
                destination.domain,
                self._resolver,
                port=self._cfg.smtp_port,
                smarthost=self._cfg.smarthost,
                rng=self._rng,
            )
        except MxLookupError as exc:
            code = 550 if exc.permanent else 451
            for entry, allowed in sendable:
                results[entry.queue_id] += [
                    RecipientResult(r, code, f"{exc.status} {exc}", remote=False) for r in allowed
                ]
            return results, ""
        envelopes, owners = self._envelopes(sendable)
        settings = SessionSettings(
            helo_name=self._settings.helo_name,
            connect_timeout=self._settings.connect_timeout,
            command_timeout=self._settings.command_timeout,
            require_tls=destination.require_tls,
            domain=destination.domain,
        )
        session = await deliver(targets, envelopes, settings, before_message=destination.rate.acquire)
        if session.failed_temporarily:
            destination.record_failure()
        elif session.delivered_any:
            destination.record_success()
        for key, recipient_results in session.results.items():
            results[owners[key]] += recipient_results
        relay = f"{session.relay.hostname}[{session.relay.address}]" if session.relay else ""
        if self.on_result is not None:
            for recipient_results in results.values():
                for result in recipient_results:
                    self.on_result(destination.domain, _result_name(result.code))
        return results, relay

    def _envelopes(
        self, sendable: list[tuple[ClaimedEntry, list[str]]]
    ) -> tuple[list[Envelope], dict[str, str]]:
        """SMTP transactions: one per entry, or one per recipient with VERP (each has its own return path)."""
        envelopes: list[Envelope] = []
        owners: dict[str, str] = {}  # envelope key -> queue id
        verp = self._cfg.verp and bool(self._cfg.bounce_domain)
        for entry, recipients in sendable:
            mail_from = str(entry.meta.get("mail_from") or "")
            if verp and mail_from:
                groups = [(self._return_path(entry.queue_id, r), [r]) for r in recipients]
            else:
                groups = [(mail_from, recipients)]
            for index, (return_path, rcpts) in enumerate(groups):
                key = f"{entry.queue_id}/{index}"
                owners[key] = entry.queue_id
                envelopes.append(Envelope(key, return_path, tuple(rcpts), entry.raw))
        return envelopes, owners

    def _return_path(self, queue_id: str, rcpt: str) -> str:
        return make_return_path(
            queue_id, rcpt, bounce_domain=self._cfg.bounce_domain, secret=self._verp_secret
        )

    async def _check_suppression(self, entry: ClaimedEntry) -> tuple[list[str], list[RecipientResult]]:
        """Recipients to send to, and results for those not attempted (suppressed, or the list is down)."""
        allowed: list[str] = []
        refused: list[RecipientResult] = []
        for rcpt in entry.recipients:
            try:
                found = await self._suppression.lookup(rcpt)
            except SuppressionError as exc:
                refused.append(
                    RecipientResult(rcpt, 451, f"4.3.0 suppression list unavailable: {exc}", remote=False)
                )
                continue
            if found is None:
                allowed.append(rcpt)
            else:
                reason = f"5.1.1 recipient is suppressed ({found.source}): {found.reason}"
                refused.append(RecipientResult(rcpt, 550, reason, remote=False))
        return allowed, refused


def _result_name(code: int) -> str:
    if 200 <= code < 300:
        return "delivered"
    return "deferred" if 400 <= code < 500 else "bounced"
