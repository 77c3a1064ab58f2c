"""The outbound delivery runner: spool entries in, SMTP sessions out, within the scheduler's limits.

Built on `postroom.core.queuerunner` (the template inbound's runner uses too). Entries are grouped by
destination domain (the submission side stores one entry per message and recipient domain). For each
destination with work, up to its concurrency limit of workers run; each takes a batch of up to
`max_messages_per_connection` entries, waits for a connection slot from the scheduler, claims the entries
(an exclusive lock, then the rename into active/: the durable record of the attempt), delivers them over
one session and settles every recipient (see outbound.settle). Entries are claimed only when a connection
slot is held, so a crash interrupts at most the batches in flight: start-up recovery returns those to the
queue, and nothing else was touched.

Deferred entries become due at `next_attempt_at` from their state file; the runner keeps the due times it
wrote itself and reads the others once, when it first sees them (start-up, other writers). `wake()` after
the submission server queues a message makes delivery start at once; a periodic rescan catches the rest.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import dns.asyncresolver

from outbound.config import RelaySettings
from outbound.mx import MxLookupError, resolve_targets
from outbound.scheduler import DeliveryScheduler, Destination
from outbound.sender import Envelope, RecipientResult, SessionSettings, deliver
from outbound.settle import AttemptSettler, ClaimedEntry
from outbound.suppression import SuppressionError, SuppressionList
from outbound.verp import make_return_path
from postroom.core.queuerunner import QueueLimits, QueueRunner
from postroom.core.retry import RetrySchedule
from postroom.core.spool import ACTIVE, CORRUPT, Claim, NotDue, Spool, SpoolError, new_queue_id

log = logging.getLogger("postroom.outbound.runner")

RETRY_JITTER = 0.2  # spreads the retries of messages that failed together (an MX outage)
DEFAULT_RESCAN_INTERVAL = 30.0


class OutboundRunner(QueueRunner):
    """The outbound queue: workers per destination domain, one connection's batch each."""

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
        """`on_result(domain, outcome)`: each recipient's settled outcome, "delivered", "deferred" or
        "bounced" (e.g. the outbound deliveries metric)."""
        super().__init__(
            spool, limits=QueueLimits(rescan_interval=rescan_interval), name="postroom-outbound", clock=clock
        )
        out = cfg.outbound
        self.scheduler = scheduler or DeliveryScheduler(out)
        self._cfg = out
        self._suppression = suppression
        self._resolver = resolver
        self._rng = rng or random.Random()
        self._settings = SessionSettings(
            helo_name=out.helo_name or cfg.smtp.hostname,
            connect_timeout=out.connect_timeout,
            command_timeout=out.command_timeout,
        )
        self._verp_secret = out.verp_secret
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
            on_settled=on_result,
        )

    def wake(self, queue_ids: Sequence[str] = ()) -> None:
        """Something was queued: look at incoming/ now rather than at the next rescan.

        Fits the submission server's `on_queued` hook; the ids are not needed, the scan finds the entries.
        """
        self.request_scan()

    # ---- queue hooks --------------------------------------------------------------------------------------

    def key_of(self, meta: dict[str, Any]) -> str:
        domain = meta.get("domain")
        return domain.lower() if isinstance(domain, str) else ""

    def worker_limit(self, key: str) -> int:
        return self.scheduler.destination(key).concurrency

    def batch_size(self, key: str) -> int:
        return self._cfg.max_messages_per_connection

    async def work(self, key: str, batch: list[str]) -> None:
        try:
            async with self.scheduler.connection_slot(key) as destination:
                await self._attempt(destination, batch)
        except (OSError, SpoolError):
            # The spool is failing (disk full, I/O error): whatever was claimed stays in active/ for
            # start-up recovery; the rest is found again by the next scan.
            log.exception("outbound spool error", extra={"domain": key, "queue_ids": batch})
            for queue_id in batch:
                self.forget(queue_id)
        # A DSN the attempt queued waits in incoming/: have the next scan find it.
        self.request_scan()

    def _reserve_queue_id(self) -> str:
        """A fresh id for a rewritten entry, known before it exists on disk so no scan picks it up early."""
        queue_id = new_queue_id(self.clock)
        self.reserve(queue_id)
        return queue_id

    # ---- delivering ---------------------------------------------------------------------------------------

    async def _attempt(self, destination: Destination, batch: list[str]) -> None:
        claims, not_due = await self.io(self._claim, batch)
        for queue_id, due in not_due.items():
            self.defer(queue_id, destination.domain, due)  # a sibling moved its time meanwhile: it stands
        for queue_id in set(batch) - {claim.queue_id for _, claim in claims} - not_due.keys():
            self.forget(queue_id)  # delivered, removed or set aside meanwhile
        try:
            if claims:
                await self._settle_batch(destination, [entry for entry, _ in claims])
        finally:
            for _, claim in claims:
                claim.release()  # after the entry left active/, or to mark an interrupted attempt abandoned

    async def _settle_batch(self, destination: Destination, entries: list[ClaimedEntry]) -> None:
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
                continue  # stays in active/ (and known): recovered at the next start
            self.forget(entry.queue_id)
            if deferral is not None:
                self.defer(deferral.queue_id, destination.domain, deferral.due)

    def _claim(self, batch: Sequence[str]) -> tuple[list[tuple[ClaimedEntry, Claim]], dict[str, float]]:
        """Claim each entry under its lock, as inbound does; and the due time of those not due yet."""
        claimed: list[tuple[ClaimedEntry, Claim]] = []
        not_due: dict[str, float] = {}
        for queue_id in batch:
            claim = self.claim(queue_id)
            if isinstance(claim, NotDue):
                not_due[queue_id] = claim.at
            elif claim is not None:
                entry = self._entry(claim)
                if entry is None:
                    claim.release()
                else:
                    claimed.append((entry, claim))
        return claimed, not_due

    def _entry(self, claim: Claim) -> ClaimedEntry | None:
        if not isinstance(claim.meta.get("rcpt_to"), list):
            # Unreadable: retrying cannot help, and a human should see it.
            log.error(
                "unreadable outbound entry moved to corrupt/",
                extra={"queue_id": claim.queue_id, "error": "no recipient list in the envelope"},
            )
            self.spool.move(claim.queue_id, ACTIVE, CORRUPT)
            return None
        return ClaimedEntry(claim.queue_id, claim.meta, claim.raw, claim.state, self.clock())

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
