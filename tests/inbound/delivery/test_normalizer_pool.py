"""The time limit on normalisation in the pool: the fallback ticket, a killed and replaced pool, innocent
neighbours built again, and the metric and log line."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import orjson
import pytest

from inbound.delivery.normalizer_pool import NormalizerPool
from inbound.delivery.runner import make_ticket_body
from postroom.core.envelope import SpoolEnvelope

pytestmark = pytest.mark.timeout(60)

HANG = b"Subject: hang\r\nX-Test: hang\r\nAuto-Submitted: auto-replied\r\n\r\nbody\r\n"
PLAIN = b"From: a@example.com\r\nSubject: plain\r\n\r\nbody\r\n"
META = SpoolEnvelope.from_meta(
    {
        "id": "Q1",
        "received_at": "2026-11-22T06:00:00.000000Z",
        "tenant": "acme",
        "mailbox": "support",
        "mail_from": "a@example.com",
        "rcpt_to": ["support@acme.example"],
    }
)


def hanging_build(raw: bytes, meta: SpoolEnvelope, max_inline: int, headers_only: str | None) -> bytes:
    """Runs in the pool's worker: a message whose normalisation outlasts the limit (until the worker is
    killed). Bounded all the same, so a failing test cannot leave a worker that holds up the run's exit."""
    if headers_only is None and b"X-Test: hang" in raw:
        time.sleep(30)
    return make_ticket_body(raw, meta, max_inline, headers_only)


class Counting:
    def __init__(self) -> None:
        self.timeouts = 0

    def normalize_timed_out(self) -> None:
        self.timeouts += 1


def _pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver"))


async def test_a_message_over_the_limit_gets_the_fallback_ticket_and_a_new_pool(
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = _pool()
    made: list[ProcessPoolExecutor] = []

    def factory() -> ProcessPoolExecutor:
        made.append(_pool())
        return made[-1]

    metrics = Counting()
    pool = NormalizerPool(
        hanging_build, timeout=2.0, executor=first, executor_factory=factory, metrics=metrics
    )
    try:
        with caplog.at_level(logging.ERROR, logger="postroom.delivery"):
            body = await pool.build_body(HANG, META, 1024 * 1024)
        ticket = orjson.loads(body)
        assert ticket["parse_error"] == "normalisation timed out after 2 s: only the header section was read"
        assert ticket["subject"] == "hang" and ticket["auto_submitted"] is True
        assert ticket["raw"]["content_base64"]  # nothing lost
        assert metrics.timeouts == 1
        assert any(getattr(record, "event", "") == "normalize_timeout" for record in caplog.records)
        assert pool.executor is None  # replaced on the next message
        with pytest.raises(RuntimeError):
            first.submit(print)  # shut down; its hung worker was killed, or `finally` would wait 600 s
        after = orjson.loads(await pool.build_body(PLAIN, META, 1024 * 1024))
        assert after["subject"] == "plain" and after["parse_error"] is None
        assert pool.executor is made[0]
    finally:
        for executor in [first, *made]:
            executor.shutdown(wait=True, cancel_futures=True)


class _Pending(Executor):
    """A pool whose task stays in flight until the test fails it."""

    def __init__(self) -> None:
        self.future: Future[Any] = Future()
        self.submitted = False
        self._max_workers = 1

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted = True
        return self.future


class _Inline(Executor):
    def __init__(self) -> None:
        self.calls = 0

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.calls += 1
        future: Future[Any] = Future()
        future.set_result(fn(*args, **kwargs))
        return future


async def test_a_message_in_a_pool_killed_over_another_is_built_again() -> None:
    killed, fresh = _Pending(), _Inline()
    pool = NormalizerPool(make_ticket_body, timeout=30.0, executor=killed, executor_factory=lambda: fresh)
    task = asyncio.create_task(pool.build_body(PLAIN, META, 1024))
    for _ in range(100):  # until the task has submitted it: in flight in the pool about to be killed
        if killed.submitted:
            break
        await asyncio.sleep(0)
    assert killed.submitted
    pool._kill(killed)  # type: ignore[arg-type]  # what a neighbour's timeout does
    killed.future.set_exception(BrokenProcessPool("killed"))
    ticket = orjson.loads(await task)
    assert ticket["subject"] == "plain" and fresh.calls == 1


async def test_a_pool_that_breaks_by_itself_is_replaced_and_the_message_counts_as_a_crash() -> None:
    broken, fresh = _Pending(), _Inline()
    broken.future.set_exception(BrokenProcessPool("a worker died"))
    pool = NormalizerPool(make_ticket_body, timeout=30.0, executor=broken, executor_factory=lambda: fresh)
    with pytest.raises(BrokenProcessPool):
        await pool.build_body(PLAIN, META, 1024)
    assert orjson.loads(await pool.build_body(PLAIN, META, 1024))["subject"] == "plain"
    assert pool.executor is fresh
