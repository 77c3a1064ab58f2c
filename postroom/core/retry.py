"""When to try a webhook delivery again, and when to give up.

Pure arithmetic: the delivery runner records attempts and the next-attempt time in the spool, so a restart
never resets the schedule; this module only says how long to wait after attempt N.

The schedule doubles from `initial` up to `max_interval` (tenacity's exponential wait). With the defaults
(30 s, capped at 2 h, given up after 24 h) that is 30 s, 1 min, 2 min, … 1 h 4 min, then every 2 h: about
twenty attempts across a day.

Jitter only ever shortens a delay, by up to `jitter` × delay. That spreads the retries of many messages that
failed together (a helpdesk outage) without ever exceeding `max_interval`, which stays a real cap.

A server's Retry-After is honoured when it asks for longer than the schedule would wait, and capped at
`max_interval`: a helpdesk may slow us down, but not park a message beyond the schedule's own ceiling. It is
never used to retry sooner than the schedule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Protocol

import tenacity

# tenacity's wait strategies read only the attempt number from the call state; the Retrying object is unused.
_RETRYING = tenacity.Retrying()


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
        wait = tenacity.wait_exponential(multiplier=self.initial, exp_base=2, max=self.max_interval)
        state = tenacity.RetryCallState(retry_object=_RETRYING, fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        return float(wait(state))

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
