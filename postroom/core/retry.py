"""When to try a delivery again, and when to give up; and a short in-process retry of transient disk errors.

The schedule is plain arithmetic: the runners record attempts and the next-attempt time in the spool, so a
restart never resets it, and no process waits in a loop for the next attempt. tenacity models a retry loop
around a call; a schedule that must survive restarts is not one, so the delay is computed here.

tenacity is used where a loop does exist: `retry_transient` retries a blocking spool write that failed with
an OSError (an I/O hiccup, space freed a moment later) a few times, with its exponential wait, before the
error is the caller's. Without it, an attempt whose outcome could not be recorded stays in active/ until
the next start-up.

The schedule doubles from `initial` up to `max_interval`. With the defaults
(30 s, capped at 2 h, given up after 24 h) that is 30 s, 1 min, 2 min, … 1 h 4 min, then every 2 h: about
twenty attempts across a day.

Jitter only ever shortens a delay, by up to `jitter` × delay. That spreads the retries of many messages that
failed together (a helpdesk outage) without ever exceeding `max_interval`, which stays a real cap.

A server's Retry-After is honoured when it asks for longer than the schedule would wait, and capped at
`max_interval`: a helpdesk may slow us down, but not park a message beyond the schedule's own ceiling. It is
never used to retry sooner than the schedule.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import tenacity

log = logging.getLogger("postroom.retry")
T = TypeVar("T")

TRANSIENT_ATTEMPTS = 4
TRANSIENT_WAIT_INITIAL = 0.05
TRANSIENT_WAIT_MAX = 1.0


async def retry_transient(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int = TRANSIENT_ATTEMPTS,
    initial: float = TRANSIENT_WAIT_INITIAL,
    max_wait: float = TRANSIENT_WAIT_MAX,
) -> T:
    """Await `call()`, again after an OSError, up to `attempts` times; the last error is re-raised.

    Only for idempotent work (a state file rewritten, a rename that finds its file already moved).
    """

    def note(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        log.warning(f"{what} failed, retrying", extra={"attempt": state.attempt_number, "error": str(error)})

    async for attempt in tenacity.AsyncRetrying(
        stop=tenacity.stop_after_attempt(attempts),
        wait=tenacity.wait_exponential(multiplier=initial, max=max_wait),
        retry=tenacity.retry_if_exception_type(OSError),
        before_sleep=note,
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover


class RetrySettings(Protocol):
    """The config keys a schedule is made from (`[webhook]`'s, or the relay's)."""

    @property
    def retry_initial(self) -> float: ...

    @property
    def retry_max_interval(self) -> float: ...

    @property
    def retry_max_age(self) -> float: ...

    @property
    def retry_jitter(self) -> float: ...


@dataclass(frozen=True)
class RetrySchedule:
    initial: float
    max_interval: float
    max_age: float
    jitter: float
    rng: random.Random = field(default_factory=random.Random, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.max_interval < self.initial or self.max_age <= 0:
            raise ValueError("retry schedule needs 0 < initial <= max_interval and max_age > 0")
        if not 0 <= self.jitter <= 1:
            raise ValueError("retry jitter must be between 0 and 1")

    @classmethod
    def from_config(cls, cfg: RetrySettings) -> RetrySchedule:
        # The config validates each value alone; clamp so a small max_interval is a cap, not an error.
        return cls(
            initial=cfg.retry_initial,
            max_interval=max(cfg.retry_max_interval, cfg.retry_initial),
            max_age=cfg.retry_max_age,
            jitter=cfg.retry_jitter,
        )

    def base_delay(self, attempt: int) -> float:
        """The un-jittered wait after `attempt` attempts (attempt >= 1)."""
        if attempt < 1:
            raise ValueError(f"attempt counts from 1, got {attempt}")
        if attempt > 64:  # 2**63 × initial is beyond any cap; avoid float overflow on absurd counts
            return self.max_interval
        return min(self.initial * 2.0 ** (attempt - 1), self.max_interval)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the next attempt, after `attempt` attempts have been made.

        `retry_after` is the server's Retry-After in seconds, if it sent one.
        """
        base = self.base_delay(attempt)
        scheduled = base * (1 - self.jitter * self.rng.random())
        if retry_after is None:
            return scheduled
        return max(scheduled, min(retry_after, self.max_interval))

    def exhausted(self, first_attempt_at: float, now: float) -> bool:
        """True once a message has been retried for `max_age` seconds since its first attempt."""
        return now - first_attempt_at >= self.max_age
