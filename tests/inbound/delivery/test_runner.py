"""The delivery runner against a real HTTP helpdesk (TicketReceiver) with scripted faults."""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

from inbound.delivery.runner import DeliveryRunner, RunnerLimits
from inbound.delivery.webhook import WebhookClient
from postroom.app import deadletter
from postroom.core.envelope import SpoolEnvelope
from postroom.core.retry import RetrySchedule
from postroom.core.spool import CORRUPT, DEAD, DEFERRED, INCOMING, DeliveryState, Spool, new_queue_id
from postroom.helpdesk.receiver import ReceivedTicket, Response, TicketReceiver
from tests.support.harness import DOMAIN, SECRET, free_port, make_config, message, running, send, smtp_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(90)


def _meta(tenant: str, n: int) -> dict[str, Any]:
    return SpoolEnvelope(
        id=new_queue_id(),
        tenant=tenant,
        mailbox="support",
        received_at="2026-11-22T06:00:00.000000Z",
        mail_from="ada@example.org",
        rcpt_to=(f"support@{tenant}.{DOMAIN}",),
        client_ip="127.0.0.1",
        helo="client.example.org",
        session=f"s{n}",
    ).to_meta()


async def test_helpdesk_down_then_up_delivers_everything(tmp_path: Path) -> None:
    port = free_port()
    receiver = TicketReceiver(SECRET, port=port)
    config = make_config(tmp_path / "spool", receiver.url)
    async with running(config) as app:
        for i in range(5):
            result = await asyncio.to_thread(
                send, smtp_port(config), [f"support@acme.{DOMAIN}"], message(f"down {i}")
            )
            assert result.code == 250
        # Every message fails against the closed port and is deferred.
        assert await eventually(lambda: len(app.spool.ids(DEFERRED)) == 5, timeout=20)
        await receiver.start()
        try:
            assert await receiver.wait_for_async(5, timeout=30)
        finally:
            await receiver.stop()
    assert sorted(t.payload["subject"] for t in receiver.accepted if t.payload) == [
        f"down {i}" for i in range(5)
    ]
    assert all(t.signature_ok for t in receiver.accepted)
    assert max(t.attempt or 0 for t in receiver.accepted) >= 2


async def test_rejected_ticket_is_dead_lettered_then_replayed_once_with_same_key(tmp_path: Path) -> None:
    fixed = False

    def helpdesk(ticket: ReceivedTicket) -> Response:
        return Response(200) if fixed else Response(400, b'{"error":"unknown mailbox"}')

    receiver = TicketReceiver(SECRET, respond_with=helpdesk)
    await receiver.start()
    config = make_config(tmp_path / "spool", receiver.url)
    try:
        async with running(config) as app:
            result = await asyncio.to_thread(send, smtp_port(config), [f"support@acme.{DOMAIN}"])
            assert result.code == 250
            assert await eventually(lambda: bool(app.spool.ids(DEAD)))
            (dead_id,) = app.spool.ids(DEAD)
            letter = deadletter.describe(app.spool, dead_id)
            assert letter.status == 400 and "400" in letter.reason and letter.tenant == "acme"
            assert "unknown mailbox" in app.spool.load_state(dead_id).last_excerpt

            fixed = True
            assert deadletter.replay(app.spool, [dead_id]) == [dead_id]
            assert await receiver.wait_for_async(1, timeout=20)
            # Delivered and gone from the spool: nothing is left that could be POSTed again.
            assert await eventually(lambda: app.spool.locate(dead_id) is None)
    finally:
        await receiver.stop()
    keys = [t.idempotency_key for t in receiver.tickets]
    assert keys == [dead_id, dead_id]
    assert len(receiver.accepted) == 1


async def test_a_hanging_tenant_does_not_hold_back_the_others(tmp_path: Path) -> None:
    def helpdesk(ticket: ReceivedTicket) -> Response:
        return Response(200, delay=30) if ticket.tenant == "slow" else Response(200)

    receiver = TicketReceiver(SECRET, respond_with=helpdesk)
    await receiver.start()
    spool = Spool(tmp_path / "spool").create()
    webhook = WebhookClient(receiver.url, SECRET, timeout=20, max_response_bytes=4096)
    runner = DeliveryRunner(
        spool,
        webhook,
        RetrySchedule(initial=1, max_interval=1, max_age=60, jitter=0),
        limits=RunnerLimits(concurrency=6, per_tenant_concurrency=2, rescan_interval=0.1),
    )
    slow = spool.store([(_meta("slow", i), message(f"slow {i}")) for i in range(8)])
    fast = spool.store([(_meta("fast", i), message(f"fast {i}")) for i in range(10)])
    await runner.start()
    try:
        runner.wake([(q, "slow") for q in slow] + [(q, "fast") for q in fast])
        assert await receiver.wait_for_async(10, timeout=10), "fast tenant starved by the slow one"
        slow_seen = [t for t in receiver.tickets if t.tenant == "slow"]
        assert len(slow_seen) <= 2  # the slow tenant never had more than its share in flight
    finally:
        await runner.stop(timeout=0.5)
        await webhook.aclose()
        await receiver.stop()


class _ExplodingExecutor(Executor):
    """Fault injection: the normaliser crashes on every message."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_exception(RuntimeError("normaliser crashed"))
        return future


async def test_message_that_crashes_the_normaliser_ends_in_corrupt_not_a_loop(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool").create()
    webhook = WebhookClient("http://127.0.0.1:9/tickets", SECRET, timeout=1, max_response_bytes=4096)
    runner = DeliveryRunner(
        spool,
        webhook,
        RetrySchedule(initial=0.05, max_interval=0.05, max_age=60, jitter=0),
        limits=RunnerLimits(rescan_interval=0.05, process_pool_min_bytes=0),
        executor=_ExplodingExecutor(),
    )
    (queue_id,) = spool.store([(_meta("acme", 1), message())])
    await runner.start()
    try:
        runner.wake([(queue_id, "acme")])
        assert await eventually(lambda: spool.locate(queue_id) == CORRUPT)
    finally:
        await runner.stop(timeout=0.5)
        await webhook.aclose()
    assert spool.locate(queue_id) == CORRUPT
    state = spool.load_state(queue_id)
    assert state.crashes == 3 and "normaliser crashed" in state.last_error
    assert spool.ids(INCOMING) == []


class _BrokenPool(Executor):
    """Fault injection: a process pool whose worker was killed (every submit raises BrokenProcessPool)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        raise BrokenProcessPool("a worker died")


async def test_a_broken_normaliser_pool_is_replaced_and_mail_still_flows(tmp_path: Path) -> None:
    receiver = TicketReceiver(SECRET)
    await receiver.start()
    spool = Spool(tmp_path / "spool").create()
    webhook = WebhookClient(receiver.url, SECRET, timeout=5, max_response_bytes=4096)
    fresh = ThreadPoolExecutor(max_workers=1)
    runner = DeliveryRunner(
        spool,
        webhook,
        RetrySchedule(initial=0.05, max_interval=0.05, max_age=60, jitter=0),
        limits=RunnerLimits(rescan_interval=0.05, process_pool_min_bytes=0),
        executor=_BrokenPool(),
        executor_factory=lambda: fresh,
    )
    (queue_id,) = spool.store([(_meta("acme", 1), message("after the crash"))])
    await runner.start()
    try:
        runner.wake([(queue_id, "acme")])
        assert await receiver.wait_for_async(1, timeout=20)
    finally:
        await runner.stop(timeout=0.5)
        await webhook.aclose()
        await receiver.stop()
        fresh.shutdown()
    assert runner.executor is fresh
    assert receiver.accepted[0].idempotency_key == queue_id
    assert spool.locate(queue_id) is None  # delivered and removed


async def test_workers_sharing_a_spool_split_what_they_find_and_deliver_each_once(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool").create()
    queued = spool.store([(_meta(f"t{i % 3}", i), message(f"found {i}")) for i in range(40)])
    receiver = TicketReceiver(SECRET)
    await receiver.start()
    webhooks = [WebhookClient(receiver.url, SECRET, timeout=5, max_response_bytes=1024) for _ in range(2)]
    runners = [
        DeliveryRunner(
            spool,
            webhooks[index],
            RetrySchedule(initial=1, max_interval=1, max_age=60, jitter=0),
            limits=RunnerLimits(rescan_interval=0.1),
            share=(index, 2),
        )
        for index in range(2)
    ]
    seen: list[set[str]] = [set(), set()]
    for index, runner in enumerate(runners):
        runner.on_outcome = lambda queue_id, _tenant, _outcome, index=index: seen[index].add(queue_id)
    try:
        for runner in runners:
            await runner.start()
        assert await receiver.wait_for_async(40, timeout=30)
    finally:
        for runner in runners:
            await runner.stop()
        for webhook in webhooks:
            await webhook.aclose()
        await receiver.stop()
    assert sorted(t.idempotency_key or "" for t in receiver.accepted) == sorted(queued)
    for queue_id in queued:  # every message is in exactly one worker's share
        assert [runner.is_mine(queue_id) for runner in runners].count(True) == 1
    for index, runner in enumerate(runners):  # and each worker found and delivered only its share
        assert seen[index] == {q for q in queued if runner.is_mine(q)}


async def test_the_runner_sweeps_what_a_killed_store_left_in_tmp(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool").create()
    orphan = spool.root / "tmp" / "0123abc.msg"
    orphan.write_bytes(b"half a message")
    an_hour_ago = orphan.stat().st_mtime - 3600
    os.utime(orphan, (an_hour_ago, an_hour_ago))
    live = spool.root / "tmp" / "0456def.msg"
    live.write_bytes(b"a store in progress")
    webhook = WebhookClient(f"http://127.0.0.1:{free_port()}/t", SECRET, timeout=5, max_response_bytes=1024)
    runner = DeliveryRunner(
        spool,
        webhook,
        RetrySchedule(initial=1, max_interval=1, max_age=60, jitter=0),
        limits=RunnerLimits(rescan_interval=0.05, tmp_sweep_interval=0.05, stale_tmp_age=600),
        share=(0, 2),  # as a worker beside siblings: start-up leaves tmp/ alone, the sweep does not
    )
    await runner.start()
    try:
        assert await eventually(lambda: not orphan.exists())
    finally:
        await runner.stop()
        await webhook.aclose()
    assert not orphan.exists()
    assert live.exists()


@pytest.mark.parametrize(
    ("meta", "error"),
    [
        ({**_meta("acme", 1), "v": 99}, "unknown envelope version 99"),
        ({"v": 2, "tenant": "acme", "mailbox": "support"}, "no 'received_at'"),
    ],
)
async def test_an_unreadable_envelope_goes_to_corrupt_at_once_never_a_crash_loop(
    tmp_path: Path, meta: dict[str, Any], error: str
) -> None:
    spool = Spool(tmp_path / "spool").create()
    webhook = WebhookClient(f"http://127.0.0.1:{free_port()}/t", SECRET, timeout=1, max_response_bytes=1024)
    outcomes: list[str] = []
    runner = DeliveryRunner(
        spool,
        webhook,
        RetrySchedule(initial=0.05, max_interval=0.05, max_age=60, jitter=0),
        limits=RunnerLimits(rescan_interval=0.05),
        on_outcome=lambda queue_id, _tenant, _outcome: outcomes.append(queue_id),
    )
    (queue_id,) = spool.store([(meta, message())])
    await runner.start()
    try:
        assert await eventually(lambda: spool.locate(queue_id) == CORRUPT)
    finally:
        await runner.stop(timeout=0.5)
        await webhook.aclose()
    state = spool.load_state(queue_id)
    assert state.crashes == 0 and state.attempts == 0 and error in state.last_error
    assert outcomes == []  # never POSTed


async def test_a_file_that_is_not_a_spool_file_goes_to_corrupt_at_its_claim(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool").create()
    (queue_id,) = spool.store([(_meta("acme", 1), message())])
    Path(spool.path(INCOMING, queue_id)).write_bytes(b"POSTROOM1 99999\n{garbage")
    assert spool.claim(queue_id, now=0) is None
    assert spool.locate(queue_id) == CORRUPT


class _FlakySpool(Spool):
    """Fault injection: the first state write of each message fails as a passing disk error would."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.failed: set[str] = set()

    def save_state(self, queue_id: str, state: DeliveryState) -> None:
        if queue_id not in self.failed:
            self.failed.add(queue_id)
            raise OSError(5, "Input/output error")
        super().save_state(queue_id, state)


async def test_an_attempt_whose_record_hits_a_transient_disk_error_is_still_recorded(tmp_path: Path) -> None:
    spool = _FlakySpool(tmp_path / "spool").create()
    webhook = WebhookClient(f"http://127.0.0.1:{free_port()}/t", SECRET, timeout=1, max_response_bytes=1024)
    runner = DeliveryRunner(
        spool,
        webhook,
        RetrySchedule(initial=60, max_interval=60, max_age=600, jitter=0),
        limits=RunnerLimits(rescan_interval=0.05),
    )
    (queue_id,) = spool.store([(_meta("acme", 1), message())])
    await runner.start()
    try:
        assert await eventually(lambda: spool.locate(queue_id) == DEFERRED)
    finally:
        await runner.stop(timeout=0.5)
        await webhook.aclose()
    assert queue_id in spool.failed and spool.load_state(queue_id).attempts == 1
