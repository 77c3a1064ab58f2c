"""Outbound throttling, the way Postfix's queue manager does it.

- A global cap on simultaneous connections (`[outbound] concurrency`).
- Per destination domain, a cap on simultaneous connections (`destination_concurrency`, or the domain's
  override) and a cap on messages started per minute (`destination_rate_per_minute`; 0 = none).
  The rate counts SMTP transactions (with VERP, one per recipient); a session waits for its turn before
  each MAIL FROM, keeping its connection.
- A destination that keeps failing (connection refused, 4xx for everything) gets its concurrency halved
  down to 1, like Postfix's failed-cohort feedback; each successful session doubles it back towards the
  configured limit, and `recovery_interval` seconds without a failure restore it outright.

The limits hold exactly under any burst: each is one counter tested and changed with no `await` in between
(asyncio runs one coroutine at a time), and waiters queue FIFO. A connection slot is taken per destination
first and globally second, so a destination at its own limit never holds global slots other destinations
could use.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from outbound.config import OutboundConfig

log = logging.getLogger("postroom.outbound.scheduler")

RATE_PERIOD = 60.0
DEFAULT_RECOVERY_INTERVAL = 300.0


class ElasticLimiter:
    """A FIFO semaphore whose limit can change while it is held (the limit applies to new acquisitions)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.in_use = 0
        self.peak = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self) -> None:
        if self.in_use < self.limit and not self._waiters:
            self._take()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            # Cancelled after being granted a slot: hand it on rather than leak it.
            if waiter.done() and not waiter.cancelled():
                self.release()
            else:
                with contextlib.suppress(ValueError):  # _wake may already have dropped it
                    self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def set_limit(self, limit: int) -> None:
        self.limit = max(1, limit)
        self._wake()

    def _take(self) -> None:
        self.in_use += 1
        self.peak = max(self.peak, self.in_use)

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._take()
                waiter.set_result(None)


class RateLimiter:
    """At most `rate` acquisitions in any window of `period` seconds (a sliding log, so exact)."""

    def __init__(
        self,
        rate: int,
        *,
        period: float = RATE_PERIOD,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.rate = rate
        self.period = period
        self._clock = clock
        self._sleep = sleep
        self._starts: collections.deque[float] = collections.deque()
        self._turn = asyncio.Lock()  # one waiter at a time, in arrival order

    async def acquire(self) -> None:
        if self.rate <= 0:
            return
        async with self._turn:
            while True:
                now = self._clock()
                while self._starts and self._starts[0] <= now - self.period:
                    self._starts.popleft()
                if len(self._starts) < self.rate:
                    self._starts.append(now)
                    return
                await self._sleep(self._starts[0] + self.period - now)


class Destination:
    """The throttling state of one destination domain."""

    def __init__(
        self,
        domain: str,
        *,
        concurrency: int,
        rate_per_minute: int,
        require_tls: bool,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        recovery_interval: float,
    ) -> None:
        self.domain = domain
        self.configured_concurrency = concurrency
        self.require_tls = require_tls
        self.connections = ElasticLimiter(concurrency)
        self.rate = RateLimiter(rate_per_minute, clock=clock, sleep=sleep)
        self._clock = clock
        self._recovery_interval = recovery_interval
        self._last_failure_at: float | None = None

    @property
    def concurrency(self) -> int:
        """The limit in force now (lower than configured while the destination is failing)."""
        self.apply_recovery()
        return self.connections.limit

    def record_failure(self) -> None:
        self._last_failure_at = self._clock()
        slowed = max(1, self.connections.limit // 2)
        if slowed < self.connections.limit:
            log.warning(
                "destination keeps failing, concurrency reduced",
                extra={"domain": self.domain, "concurrency": slowed},
            )
        self.connections.set_limit(slowed)

    def record_success(self) -> None:
        if self.connections.limit < self.configured_concurrency:
            restored = min(self.configured_concurrency, self.connections.limit * 2)
            log.info("destination recovering", extra={"domain": self.domain, "concurrency": restored})
            self.connections.set_limit(restored)

    def apply_recovery(self) -> None:
        """Restore the configured limit once the destination has gone `recovery_interval` without failing."""
        if (
            self._last_failure_at is not None
            and self._clock() - self._last_failure_at >= self._recovery_interval
        ):
            self._last_failure_at = None
            self.connections.set_limit(self.configured_concurrency)


class DeliveryScheduler:
    """Hands out connection slots within the global and per-destination limits."""

    def __init__(
        self,
        cfg: OutboundConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        recovery_interval: float = DEFAULT_RECOVERY_INTERVAL,
    ) -> None:
        self._cfg = cfg
        self._clock = clock
        self._sleep = sleep
        self._recovery_interval = recovery_interval
        self.connections = ElasticLimiter(cfg.concurrency)
        self._destinations: dict[str, Destination] = {}

    def destination(self, domain: str) -> Destination:
        domain = domain.lower().rstrip(".")
        found = self._destinations.get(domain)
        if found is None:
            limits = self._cfg.limits_for(domain)
            found = Destination(
                domain,
                concurrency=limits.concurrency or self._cfg.destination_concurrency,
                rate_per_minute=limits.rate_per_minute or 0,
                require_tls=limits.require_tls,
                clock=self._clock,
                sleep=self._sleep,
                recovery_interval=self._recovery_interval,
            )
            self._destinations[domain] = found
        return found

    @asynccontextmanager
    async def connection_slot(self, domain: str) -> AsyncIterator[Destination]:
        """Hold one connection slot for `domain` (its own limit, then the global cap)."""
        destination = self.destination(domain)
        destination.apply_recovery()
        await destination.connections.acquire()
        try:
            await self.connections.acquire()
            try:
                yield destination
            finally:
                self.connections.release()
        finally:
            destination.connections.release()
