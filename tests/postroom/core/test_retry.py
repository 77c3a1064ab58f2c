"""The webhook retry schedule: doubling, capped, jittered downwards, honouring Retry-After, a day long."""

from __future__ import annotations

import random

import pytest

from inbound.config import WebhookConfig
from postroom.core.retry import RetrySchedule, retry_transient

HOUR = 3600.0
DAY = 86400.0


def schedule(jitter: float = 0.0, seed: int = 1) -> RetrySchedule:
    return RetrySchedule(
        initial=30, max_interval=2 * HOUR, max_age=DAY, jitter=jitter, rng=random.Random(seed)
    )


def test_from_config_takes_the_webhook_settings() -> None:
    cfg = WebhookConfig(retry_initial=5, retry_max_interval=60, retry_max_age=600, retry_jitter=0.1)
    assert RetrySchedule.from_config(cfg) == RetrySchedule(
        initial=5, max_interval=60, max_age=600, jitter=0.1
    )


def test_from_config_treats_a_max_interval_below_initial_as_the_cap() -> None:
    cfg = WebhookConfig(retry_initial=60, retry_max_interval=10)
    assert RetrySchedule.from_config(cfg).delay(1) == pytest.approx(60, rel=cfg.retry_jitter)


def test_delays_double_from_initial_until_the_cap() -> None:
    delays = [schedule().delay(attempt) for attempt in range(1, 12)]
    assert delays == [30, 60, 120, 240, 480, 960, 1920, 3840, 7200, 7200, 7200]


def test_very_high_attempt_numbers_stay_at_the_cap() -> None:
    assert schedule().delay(10_000) == 2 * HOUR


def test_jitter_only_shortens_and_stays_within_its_fraction() -> None:
    jittered = schedule(jitter=0.2, seed=7)
    for attempt in (1, 4, 9, 30):
        base = jittered.base_delay(attempt)
        samples = [jittered.delay(attempt) for _ in range(200)]
        assert all(0.8 * base <= s <= base for s in samples)
        # Spread across the band, not clustered at one end.
        assert min(samples) < 0.85 * base and max(samples) > 0.95 * base


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    first = [schedule(jitter=0.2, seed=3).delay(n) for n in range(1, 6)]
    second = [schedule(jitter=0.2, seed=3).delay(n) for n in range(1, 6)]
    assert first == second


def test_a_longer_retry_after_is_honoured() -> None:
    assert schedule().delay(1, retry_after=600) == 600


def test_a_shorter_retry_after_never_retries_sooner_than_the_schedule() -> None:
    assert schedule().delay(5, retry_after=1) == 480


def test_retry_after_is_capped_at_the_maximum_interval() -> None:
    assert schedule().delay(1, retry_after=7 * DAY) == 2 * HOUR


def test_retry_after_wins_over_a_jittered_delay_when_longer() -> None:
    jittered = schedule(jitter=1.0, seed=5)
    assert all(jittered.delay(1, retry_after=45) == 45 for _ in range(50))


def test_exhausted_once_max_age_has_passed_since_the_first_attempt() -> None:
    start = 1_700_000_000.0
    assert not schedule().exhausted(start, start)
    assert not schedule().exhausted(start, start + DAY - 1)
    assert schedule().exhausted(start, start + DAY)
    assert schedule().exhausted(start, start + 2 * DAY)


@pytest.mark.parametrize("jitter", [0.0, 0.2])
def test_default_schedule_spans_about_a_day_in_about_twenty_attempts(jitter: float) -> None:
    defaults = RetrySchedule.from_config(WebhookConfig())
    plan = RetrySchedule(defaults.initial, defaults.max_interval, defaults.max_age, jitter, random.Random(0))
    first_attempt_at, now, attempts = 0.0, 0.0, 1
    while not plan.exhausted(first_attempt_at, now):
        now += plan.delay(attempts)
        attempts += 1
    assert DAY <= now < DAY + 2 * HOUR
    assert 18 <= attempts <= 25


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_count_from_one(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt"):
        schedule().delay(attempt)


@pytest.mark.parametrize(
    ("initial", "max_interval", "max_age", "jitter"),
    [(0, 10, 100, 0), (20, 10, 100, 0), (1, 10, 0, 0), (1, 10, 100, 1.5)],
    ids=["zero initial", "cap below initial", "zero max age", "jitter above one"],
)
def test_invalid_schedules_are_refused(
    initial: float, max_interval: float, max_age: float, jitter: float
) -> None:
    with pytest.raises(ValueError):
        RetrySchedule(initial, max_interval, max_age, jitter)


async def test_retry_transient_retries_an_os_error_until_the_call_succeeds() -> None:
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise OSError(5, "Input/output error")
        return "written"

    assert await retry_transient(flaky, what="a write", initial=0.001) == "written"
    assert len(calls) == 3


async def test_retry_transient_gives_up_with_the_last_error_and_never_retries_other_errors() -> None:
    calls: list[str] = []

    async def broken() -> None:
        calls.append("disk")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        await retry_transient(broken, what="a write", attempts=3, initial=0.001)
    assert calls == ["disk"] * 3

    async def buggy() -> None:
        calls.append("bug")
        raise KeyError("not transient")

    with pytest.raises(KeyError):
        await retry_transient(buggy, what="a write", initial=0.001)
    assert calls.count("bug") == 1
