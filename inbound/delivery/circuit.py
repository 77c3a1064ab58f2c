"""Per-tenant back-pressure: while a tenant's helpdesk keeps failing and mail piles up, its new mail waits.

A circuit per tenant opens after `failures_to_open` consecutive failed webhook attempts (Retry outcomes) and
closes on the first Delivered. The listener's RCPT gate refuses a tenant (451 4.3.0) only while its circuit
is open AND this node's backlog for it reaches `max_queued` messages or `max_age` seconds: other tenants flow,
and a short outage with little mail queued refuses nobody.

With `[redis] url` set, open circuits are shared through one sorted set (tenant → open-until time): a node
writes it when a circuit opens or closes, and reads it every `redis_refresh` seconds — one ZRANGEBYSCORE
whatever else the server holds — so the RCPT-time check stays a dict lookup. Failure counts and backlogs
stay per node: each node has its own spool and sees the same helpdesk. Open-until times come from the nodes'
clocks, which must be NTP-synchronised (as for the throttle's Redis windows).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from inbound.config import BackpressureConfig
from inbound.delivery.webhook import Delivered, Retry, WebhookAnswer
from postroom.core.envelope import tenant_of
from postroom.core.spool import ACTIVE, DEFERRED, INCOMING, Spool, SpoolError, queued_at_from_id

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger("postroom.circuit")

UNDELIVERED = (INCOMING, ACTIVE, DEFERRED)
# How often the in-memory backlog is checked against the spool, for messages that left it without a
# Delivered or Permanent outcome (retries exhausted, corrupt/, CLI purge) or arrived by CLI replay.
RECONCILE_INTERVAL = 60.0
QueuedHook = Callable[[Sequence[tuple[str, str]]], None]
_CLUSTER = {"source": "redis"}  # log field: a change another node (or the expiry) made


class Backlog:
    """This node's spooled-but-undelivered messages per tenant: count, and the oldest (ids sort by time)."""

    def __init__(self) -> None:
        self._tenant_of: dict[str, str] = {}
        self._ids: dict[str, set[str]] = {}
        self._oldest: dict[str, list[str]] = {}  # per tenant a heap of ids; removed ones are popped lazily
        self._missing: set[str] = set()  # tracked ids absent from the last spool listing
        self._left_during_listing: set[str] | None = None

    def add(self, queue_id: str, tenant: str) -> None:
        if queue_id in self._tenant_of:
            return
        self._tenant_of[queue_id] = tenant
        self._ids.setdefault(tenant, set()).add(queue_id)
        heapq.heappush(self._oldest.setdefault(tenant, []), queue_id)

    def remove(self, queue_id: str) -> None:
        if self._left_during_listing is not None:
            self._left_during_listing.add(queue_id)
        tenant = self._tenant_of.pop(queue_id, None)
        if tenant is None:
            return
        ids = self._ids[tenant]
        ids.discard(queue_id)
        heap = self._oldest[tenant]
        if not ids:
            del self._ids[tenant], self._oldest[tenant]
        elif len(heap) > 2 * len(ids) + 64:  # a tenant whose backlog never empties: drop popped-later ids
            heap[:] = sorted(ids)  # a sorted list is a heap

    def count(self, tenant: str) -> int:
        return len(self._ids.get(tenant, ()))

    def oldest_age(self, tenant: str, now: float) -> float:
        heap = self._oldest.get(tenant)
        if not heap:
            return 0.0
        while heap[0] not in self._ids[tenant]:
            heapq.heappop(heap)
        return max(0.0, now - queued_at_from_id(heap[0]))

    def begin_listing(self) -> set[str]:
        """The ids known now; removals from here on are remembered so the listing can't revive them."""
        self._left_during_listing = set()
        return set(self._tenant_of)

    def cancel_listing(self) -> None:
        self._left_during_listing = None

    def apply_listing(self, present: set[str], found: dict[str, str]) -> None:
        """Add what the spool holds that we did not know; drop what two listings in a row did not find.

        Two strikes, because a message moving between two states while they are listed one after the
        other can be missed once, as can one queued after the listing began.
        """
        left = self._left_during_listing or set()
        self._left_during_listing = None
        for queue_id, tenant in found.items():
            if queue_id not in left:
                self.add(queue_id, tenant)
        absent = set(self._tenant_of) - present
        for queue_id in absent & self._missing:
            self.remove(queue_id)
        self._missing = absent - self._missing


def list_spool(
    spool: Spool, known: set[str], discover: Sequence[str] = UNDELIVERED
) -> tuple[set[str], dict[str, str]]:
    """Blocking: every undelivered id, and the tenant of each one in a `discover` state not in `known`."""
    present: set[str] = set()
    found: dict[str, str] = {}
    for state in UNDELIVERED:
        for queue_id in spool.ids(state):
            present.add(queue_id)
            if queue_id in known or queue_id in found or state not in discover:
                continue
            with contextlib.suppress(OSError, SpoolError, ValueError):  # moved meanwhile: next listing
                found[queue_id] = tenant_of(spool.read_meta(state, queue_id))
    return present, found


class TenantCircuits:
    """Consecutive webhook failures per tenant and the open circuits (this node's, and peers' via Redis)."""

    def __init__(self, failures_to_open: int, open_ttl: float, clock: Callable[[], float]) -> None:
        self.failures_to_open = failures_to_open
        self.open_ttl = open_ttl
        self.clock = clock
        self._failures: dict[str, int] = {}
        self._open_until: dict[str, float] = {}
        # Changes not yet written to the shared store: tenant → open-until, or None for closed.
        self.unsent: dict[str, float | None] = {}

    def is_open(self, tenant: str) -> bool:
        until = self._open_until.get(tenant)
        return until is not None and until > self.clock()

    def record(self, tenant: str, outcome: WebhookAnswer) -> bool:
        """Count one webhook attempt; True when the shared state needs writing."""
        if isinstance(outcome, Delivered):
            self._failures.pop(tenant, None)
            if self._open_until.pop(tenant, None) is None:
                return False
            log.info("tenant circuit closed", extra={"event": "circuit_closed", "tenant": tenant})
            self.unsent[tenant] = None
            return True
        if not isinstance(outcome, Retry):
            return False  # the helpdesk answered (a 4xx): not an outage
        failures = self._failures.get(tenant, 0) + 1
        self._failures[tenant] = failures
        if failures < self.failures_to_open:
            return False
        if not self.is_open(tenant):
            log.warning(
                "tenant circuit opened",
                extra={"event": "circuit_open", "tenant": tenant, "failures": failures},
            )
        # Every further failure pushes the expiry on, so the circuit outlives the outage but not the node.
        until = self.clock() + self.open_ttl
        self._open_until[tenant] = until
        self.unsent[tenant] = until
        return True

    def merge(self, shared: dict[str, float]) -> None:
        """Adopt the shared view; changes made since it was read stay on top of it."""
        for tenant in set(self._open_until) - set(shared) - set(self.unsent):
            self._failures.pop(tenant, None)  # closed elsewhere: count consecutive failures afresh
            log.info("tenant circuit closed", extra={**_CLUSTER, "event": "circuit_closed", "tenant": tenant})
        for tenant in set(shared) - set(self._open_until):
            log.info("tenant circuit opened", extra={**_CLUSTER, "event": "circuit_open", "tenant": tenant})
        view = dict(shared)
        for tenant, until in self.unsent.items():
            if until is None:
                view.pop(tenant, None)
            else:
                view[tenant] = until
        self._open_until = view


class CircuitStoreError(Exception):
    """The shared circuit store could not be reached or answered with an error."""


class RedisCircuitStore:
    """The open circuits of all nodes in one Redis sorted set: member tenant, score open-until."""

    def __init__(self, redis: Redis, key: str) -> None:
        self.redis = redis
        self.key = key

    async def exchange(self, changes: dict[str, float | None], now: float) -> dict[str, float]:
        """Write this node's changes, drop expired circuits, read the open ones: one round trip.

        Redis's own errors come out as CircuitStoreError.
        """
        # Imported here, as redis.asyncio is by the app: ~14 MB (with the cryptography it loads) that a node
        # without [redis] url never needs.
        from redis.exceptions import RedisError

        try:
            return await self._exchange(changes, now)
        except RedisError as exc:
            raise CircuitStoreError(str(exc)) from exc

    async def _exchange(self, changes: dict[str, float | None], now: float) -> dict[str, float]:
        async with self.redis.pipeline(transaction=False) as pipe:
            opened = {tenant: until for tenant, until in changes.items() if until is not None}
            closed = [tenant for tenant, until in changes.items() if until is None]
            if opened:
                pipe.zadd(self.key, opened)
            if closed:
                pipe.zrem(self.key, *closed)
            pipe.zremrangebyscore(self.key, "-inf", now)
            pipe.zrangebyscore(self.key, f"({now!r}", "+inf", withscores=True)
            results: list[Any] = await pipe.execute()
        return {_text(member): float(score) for member, score in results[-1]}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class BackPressure:
    """The RCPT gate with what feeds it: the listener's queued messages and the runner's webhook outcomes."""

    def __init__(
        self,
        cfg: BackpressureConfig,
        spool: Spool,
        *,
        redis: Redis | None = None,
        clock: Callable[[], float] = time.time,
        reconcile_interval: float = RECONCILE_INTERVAL,
    ) -> None:
        self.cfg = cfg
        self.spool = spool
        self.clock = clock
        self.reconcile_interval = reconcile_interval
        self.backlog = Backlog()
        self.circuits = TenantCircuits(cfg.failures_to_open, cfg.open_ttl, clock)
        self.store = RedisCircuitStore(redis, cfg.redis_key) if redis is not None else None
        self._refusing: set[str] = set()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._store_failing = False

    # ---- the hooks ----------------------------------------------------------------------------------------

    def admits(self, tenant: str) -> bool:
        """The listener's `tenant_gate`: False while the circuit is open and the backlog over a threshold."""
        refuse = self.circuits.is_open(tenant) and (
            self.backlog.count(tenant) >= self.cfg.max_queued
            or self.backlog.oldest_age(tenant, self.clock()) >= self.cfg.max_age
        )
        if refuse != (tenant in self._refusing):  # log when a tenant's gate shuts or opens, not per RCPT
            self._note_gate(tenant, refuse)
        return not refuse

    def queued(self, items: Sequence[tuple[str, str]]) -> None:
        """The listener's `on_queued`: (queue id, tenant) pairs just acknowledged with 250."""
        for queue_id, tenant in items:
            self.backlog.add(queue_id, tenant)

    def counting(self, then: QueuedHook) -> QueuedHook:
        """`on_queued` for the listener: count the messages, then pass them on (to the runner's wake)."""

        def hook(items: Sequence[tuple[str, str]]) -> None:
            self.queued(items)
            then(items)

        return hook

    def outcome(self, queue_id: str, tenant: str, outcome: WebhookAnswer) -> None:
        """The runner's `on_outcome`, after every webhook attempt."""
        if not isinstance(outcome, Retry):  # Delivered → done/, Permanent → dead/: off the backlog
            self.backlog.remove(queue_id)
        if self.circuits.record(tenant, outcome) and self.store is not None:
            self._wakeup.set()  # write the change now rather than at the next refresh

    def _note_gate(self, tenant: str, refuse: bool) -> None:
        extra = {
            "tenant": tenant,
            "queued": self.backlog.count(tenant),
            "oldest_age": round(self.backlog.oldest_age(tenant, self.clock()), 1),
        }
        if refuse:
            self._refusing.add(tenant)
            log.warning("tenant's new mail deferred (451 4.3.0)", extra={**extra, "event": "backpressure_on"})
        else:
            self._refusing.discard(tenant)
            log.info("tenant's new mail accepted again", extra={**extra, "event": "backpressure_off"})

    # ---- background work ----------------------------------------------------------------------------------

    async def start(self) -> None:
        """Learn the backlog from the spool and the shared circuits before the listener opens."""
        await self.reconcile(starting=True)
        await self.refresh()
        self._task = asyncio.create_task(self._run(), name="postroom-backpressure")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.refresh()  # a circuit closed in the last moments must not stay open for open_ttl

    async def reconcile(self, *, starting: bool = False) -> None:
        """Match the backlog to the spool. Once running, a message unknown here is looked for only in
        incoming/ and deferred/: one in active/ may be one whose Delivered was just counted."""
        discover = UNDELIVERED if starting else (INCOMING, DEFERRED)
        known = self.backlog.begin_listing()
        try:
            present, found = await asyncio.to_thread(list_spool, self.spool, known, discover)
        except OSError as exc:
            self.backlog.cancel_listing()
            log.warning("cannot list the spool for back-pressure", extra={"error": str(exc)})
            return
        self.backlog.apply_listing(present, found)

    async def refresh(self) -> None:
        """Send this node's circuit changes to Redis and adopt the cluster's view."""
        if self.store is None:
            return
        changes, self.circuits.unsent = self.circuits.unsent, {}
        try:
            shared = await self.store.exchange(changes, self.clock())
        except (CircuitStoreError, OSError) as exc:
            for tenant, until in changes.items():  # retried next time, unless superseded meanwhile
                self.circuits.unsent.setdefault(tenant, until)
            if not self._store_failing:
                log.warning("circuit state not shared: redis unavailable", extra={"error": str(exc)})
            self._store_failing = True
            return
        self._store_failing = False
        self.circuits.merge(shared)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_reconcile = loop.time() + self.reconcile_interval
        interval = self.cfg.redis_refresh if self.store is not None else self.reconcile_interval
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=interval)
            self._wakeup.clear()
            try:
                await self.refresh()
                if loop.time() >= next_reconcile:
                    next_reconcile = loop.time() + self.reconcile_interval
                    await self.reconcile()
            except Exception:  # a bug here must not end back-pressure for the life of the process
                log.exception("back-pressure refresh failed")
