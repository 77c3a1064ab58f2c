"""Counters behind the throttle: sliding-window rate limits, event counts and concurrency slots.

One small protocol, two backends: `MemoryThrottleStore` here (one process) and `RedisThrottleStore`
(filters/throttle_redis.py, shared by every Postroom node). Both use a sliding log: an event is admitted when
fewer than `limit` events were admitted in the `window` seconds before it, so "N per minute" admits N in any
minute, never 2N across a window boundary. Refused events are not recorded, so a client that keeps knocking
does not lock itself out for longer than the window.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


class StoreUnavailable(Exception):
    """The shared store cannot be reached; the throttle reports a temperror."""


@dataclass(frozen=True, slots=True)
class RateLimit:
    key: str  # what is counted, e.g. "msg:ip:127.0.0.10"
    limit: int  # events admitted per window
    window: float  # seconds
    reason: str  # the refusal reason when full, e.g. "throttle.message_rate"
    label: str = ""  # who is limited, for replies and logs, e.g. "sender a@example.org"


class ThrottleStore(Protocol):
    async def admit(self, limits: Sequence[RateLimit], now: float) -> RateLimit | None:
        """Record one event under every limit; if one is full, record nothing and return that limit."""
        ...

    async def count(self, key: str, window: float, now: float) -> int:
        """Record one event; return how many `key` saw within `window` seconds, this one included."""
        ...

    async def acquire_slot(self, key: str, holder: str, limit: int, lease: float, now: float) -> bool:
        """Take (or keep) one of `limit` slots for `holder`; an unreleased slot frees itself after `lease`."""
        ...

    async def release_slot(self, key: str, holder: str) -> None:
        """Give the slot back; releasing a slot not held is a no-op."""
        ...


class MemoryThrottleStore:
    """In-process state: exact for one node; memory bounded by the limits and swept of idle keys."""

    def __init__(self, sweep_interval: float = 60.0) -> None:
        self._events: dict[str, tuple[float, deque[float]]] = {}  # key → (window, event times)
        self._slots: dict[str, dict[str, float]] = {}  # key → holder → lease expiry
        self._sweep_interval = sweep_interval
        self._next_sweep = 0.0

    async def admit(self, limits: Sequence[RateLimit], now: float) -> RateLimit | None:
        self._maybe_sweep(now)
        logs = [self._log(limit.key, limit.window, now) for limit in limits]
        for limit, events in zip(limits, logs, strict=True):
            if len(events) >= limit.limit:
                return limit
        for events in logs:
            events.append(now)
        return None

    async def count(self, key: str, window: float, now: float) -> int:
        self._maybe_sweep(now)
        events = self._log(key, window, now)
        events.append(now)
        return len(events)

    async def acquire_slot(self, key: str, holder: str, limit: int, lease: float, now: float) -> bool:
        holders = self._slots.setdefault(key, {})
        for expired in [h for h, expiry in holders.items() if expiry <= now]:
            del holders[expired]
        if holder not in holders and len(holders) >= limit:
            return False
        holders[holder] = now + lease
        return True

    async def release_slot(self, key: str, holder: str) -> None:
        holders = self._slots.get(key)
        if holders is not None:
            holders.pop(holder, None)
            if not holders:
                del self._slots[key]

    def _log(self, key: str, window: float, now: float) -> deque[float]:
        """The key's events inside (now - window, now]."""
        entry = self._events.get(key)
        events: deque[float] = entry[1] if entry is not None else deque()
        self._events[key] = (window, events)
        horizon = now - window
        while events and events[0] <= horizon:
            events.popleft()
        return events

    def _maybe_sweep(self, now: float) -> None:
        """Forget keys with no event left in their window and slots whose lease ran out (clients gone)."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._sweep_interval
        idle = [
            key for key, (window, events) in self._events.items() if not events or events[-1] <= now - window
        ]
        for key in idle:
            del self._events[key]
        for key in list(self._slots):
            holders = {holder: expiry for holder, expiry in self._slots[key].items() if expiry > now}
            if holders:
                self._slots[key] = holders
            else:
                del self._slots[key]
