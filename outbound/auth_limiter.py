"""Counts failed AUTH attempts per key (an IP, an IP and user, a user) and locks a key out for a while.

A key that fails `max_failures` times within `lockout_seconds` is refused for the next `lockout_seconds`,
whatever it sends. A success clears the key. State is in memory, per node: a brute-force attempt spread over
several submission nodes is slowed per node, which with the default five tries per 15 minutes is still far
too slow to matter.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

# Bounds memory under a flood of made-up user names; locked-out keys are the last to be forgotten.
MAX_TRACKED_KEYS = 100_000


@dataclass
class _Record:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class AuthLimiter:
    def __init__(
        self,
        *,
        max_failures: int,
        lockout_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_TRACKED_KEYS,
    ) -> None:
        self.max_failures = max_failures
        self.lockout_seconds = lockout_seconds
        self.clock = clock
        self.max_keys = max_keys
        self._records: dict[str, _Record] = {}

    def __len__(self) -> int:
        """How many keys are tracked (bounded by `max_keys`)."""
        return len(self._records)

    def locked_for(self, key: str) -> float:
        """Seconds until `key` may try again; 0 when it is not locked out."""
        record = self._records.get(key)
        if record is None:
            return 0.0
        return max(0.0, record.locked_until - self.clock())

    def record_failure(self, key: str) -> bool:
        """Count a failure; True when this failure locked the key out."""
        now = self.clock()
        record = self._records.pop(key, None) or _Record()
        self._records[key] = record  # re-inserted: dict order is least recently failed first
        record.failures = [t for t in record.failures if now - t < self.lockout_seconds]
        record.failures.append(now)
        locked = len(record.failures) >= self.max_failures
        if locked:
            record.locked_until = now + self.lockout_seconds
            record.failures.clear()
        self._evict(now)
        return locked

    def record_success(self, key: str) -> None:
        self._records.pop(key, None)

    def _evict(self, now: float) -> None:
        """Past `max_keys`, forget expired records, then the stalest unlocked ones, then any.

        Shrinks to 90% so that a flood pays for the full scan once per many new keys, not on every one.
        """
        if len(self._records) <= self.max_keys:
            return
        target = self.max_keys * 9 // 10
        for key in [k for k, r in self._records.items() if self._expired(r, now)]:
            del self._records[key]
        excess = len(self._records) - target
        if excess > 0:
            for key in [k for k, r in self._records.items() if r.locked_until <= now][:excess]:
                del self._records[key]
        while len(self._records) > target:
            del self._records[next(iter(self._records))]

    def _expired(self, record: _Record, now: float) -> bool:
        recent = record.failures and now - record.failures[-1] < self.lockout_seconds
        return record.locked_until <= now and not recent
