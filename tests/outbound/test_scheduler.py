"""Throttling: exact limits under bursts, rate limiting on an injected clock, slow-down and recovery."""

from __future__ import annotations

import asyncio
import random

from outbound.config import DestinationConfig, OutboundConfig
from outbound.scheduler import DeliveryScheduler, ElasticLimiter, RateLimiter
from tests.outbound.delivery_fixtures import VirtualTime


async def test_elastic_limiter_never_exceeds_its_limit_under_a_burst() -> None:
    limiter = ElasticLimiter(7)
    holding = 0
    observed = 0
    rng = random.Random(1)

    async def use() -> None:
        nonlocal holding, observed
        await limiter.acquire()
        holding += 1
        observed = max(observed, holding)
        await asyncio.sleep(rng.random() / 1000)
        holding -= 1
        limiter.release()

    await asyncio.gather(*(use() for _ in range(500)))
    assert observed == limiter.peak == 7
    assert limiter.in_use == 0


async def test_lowering_the_limit_holds_new_acquisitions_until_enough_are_released() -> None:
    limiter = ElasticLimiter(4)
    for _ in range(4):
        await limiter.acquire()
    limiter.set_limit(2)
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0.01)
    limiter.release()
    limiter.release()  # 2 in use: still at the new limit
    await asyncio.sleep(0.01)
    assert not waiter.done()
    limiter.release()
    await asyncio.wait_for(waiter, 1.0)
    assert limiter.in_use == 2


async def test_a_cancelled_waiter_leaks_no_slot() -> None:
    limiter = ElasticLimiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    limiter.release()
    assert limiter.in_use == 0
    await asyncio.wait_for(limiter.acquire(), 1.0)


async def test_rate_limit_allows_at_most_rate_starts_in_any_minute() -> None:
    clock = VirtualTime()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    starts: list[float] = []

    async def send() -> None:
        await limiter.acquire()
        starts.append(clock())

    await asyncio.gather(*(send() for _ in range(35)))
    assert len(starts) == 35
    for i, start in enumerate(starts):
        in_window = [s for s in starts[i:] if s < start + 60.0]
        assert len(in_window) <= 10
    assert starts[:10] == [0.0] * 10  # a quiet destination may start a minute's worth at once
    assert starts[-1] == 180.0  # 35 messages at 10/min: the last starts in the fourth minute


async def test_zero_rate_means_unlimited() -> None:
    clock = VirtualTime()
    limiter = RateLimiter(0, clock=clock, sleep=clock.sleep)
    for _ in range(1000):
        await limiter.acquire()
    assert clock() == 0.0


def test_failures_halve_concurrency_to_one_and_success_doubles_it_back() -> None:
    clock = VirtualTime()
    scheduler = DeliveryScheduler(
        OutboundConfig(destination_concurrency=20), clock=clock, recovery_interval=600
    )
    destination = scheduler.destination("Flaky.Example.")
    assert destination.domain == "flaky.example" and destination.concurrency == 20
    seen = []
    for _ in range(6):
        destination.record_failure()
        seen.append(destination.concurrency)
    assert seen == [10, 5, 2, 1, 1, 1]
    destination.record_success()
    destination.record_success()
    assert destination.concurrency == 4
    for _ in range(5):
        destination.record_success()
    assert destination.concurrency == 20


def test_a_slowed_destination_recovers_after_a_quiet_while() -> None:
    clock = VirtualTime()
    scheduler = DeliveryScheduler(
        OutboundConfig(destination_concurrency=8), clock=clock, recovery_interval=300
    )
    destination = scheduler.destination("flaky.example")
    destination.record_failure()
    destination.record_failure()
    clock.now = 299.0
    assert destination.concurrency == 2
    clock.now = 300.0
    assert destination.concurrency == 8


def test_per_domain_overrides_and_defaults() -> None:
    cfg = OutboundConfig(
        destination_concurrency=20,
        destination_rate_per_minute=600,
        destinations={"gmail.com": DestinationConfig(concurrency=5, rate_per_minute=100, require_tls=True)},
    )
    scheduler = DeliveryScheduler(cfg)
    gmail = scheduler.destination("GMAIL.com")
    other = scheduler.destination("example.org")
    assert (gmail.concurrency, gmail.rate.rate, gmail.require_tls) == (5, 100, True)
    assert (other.concurrency, other.rate.rate, other.require_tls) == (20, 600, False)
    assert scheduler.destination("gmail.com") is gmail


async def test_connection_slots_hold_both_limits_exactly_under_a_burst() -> None:
    cfg = OutboundConfig(
        concurrency=9,
        destination_concurrency=4,
        destinations={"small.example": DestinationConfig(concurrency=2)},
    )
    scheduler = DeliveryScheduler(cfg)
    domains = ["small.example", "a.example", "b.example", "c.example"]
    open_now = {d: 0 for d in domains}
    peak = {d: 0 for d in domains}
    total = total_peak = 0
    rng = random.Random(3)

    async def session(domain: str) -> None:
        nonlocal total, total_peak
        async with scheduler.connection_slot(domain):
            open_now[domain] += 1
            total += 1
            peak[domain] = max(peak[domain], open_now[domain])
            total_peak = max(total_peak, total)
            await asyncio.sleep(rng.random() / 500)
            open_now[domain] -= 1
            total -= 1

    await asyncio.gather(*(session(domains[i % 4]) for i in range(800)))
    assert peak == {"small.example": 2, "a.example": 4, "b.example": 4, "c.example": 4}
    assert total_peak == 9
    assert scheduler.connections.in_use == 0
