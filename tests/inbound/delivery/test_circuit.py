"""Per-tenant back-pressure: circuits, backlog thresholds, the spool as the backlog's truth, Redis sharing,
and the listener's 451 4.3.0 at RCPT for a backed-up tenant while the others flow."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from inbound.delivery.circuit import BackPressure, BackpressureConfig, TenantCircuits
from inbound.delivery.webhook import Delivered, Permanent, Retry
from postroom.app.config import config_from_mapping
from postroom.core.configload import ConfigError
from postroom.core.spool import DEAD, DEFERRED, INCOMING, Spool
from postroom.helpdesk.receiver import ReceivedTicket, Response, TicketReceiver
from tests.filters.throttle_harness import ManualClock
from tests.servers.redis import RedisServer
from tests.support.harness import DOMAIN, SECRET, make_config, running, send, send_raw_dialogue, smtp_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(60)

FAILED = Retry(reason="status 503", status=503, retry_after=None, excerpt="", ms=1.0)
DELIVERED = Delivered(status=200, ms=1.0)
REJECTED = Permanent(reason="status 400", status=400, excerpt="", ms=1.0)
BACKPRESSURE_REPLY = "451 4.3.0 mailbox temporarily unavailable, try again later"


def _config(**values: Any) -> BackpressureConfig:
    return BackpressureConfig(**{"redis_key": f"postroom-test:{uuid.uuid4().hex[:8]}:circuits", **values})


def _fail(pressure: BackPressure, tenant: str, times: int) -> None:
    for _ in range(times):
        pressure.outcome("", tenant, FAILED)


def _queue(spool: Spool, pressure: BackPressure, tenant: str, count: int) -> list[str]:
    """Spool `count` messages for `tenant` and report them as the listener does after its 250."""
    ids = spool.store([({"tenant": tenant}, b"Subject: x\r\n\r\nx\r\n") for _ in range(count)])
    pressure.queued([(queue_id, tenant) for queue_id in ids])
    return ids


# ---- the circuit -------------------------------------------------------------------------------------------


def test_circuit_opens_after_n_consecutive_failures_and_closes_on_the_first_delivery() -> None:
    circuits = TenantCircuits(failures_to_open=3, open_ttl=600, clock=ManualClock())
    for _ in range(2):
        circuits.record("acme", FAILED)
    assert not circuits.is_open("acme")
    circuits.record("acme", FAILED)
    assert circuits.is_open("acme")
    assert not circuits.is_open("globex")
    circuits.record("acme", DELIVERED)
    assert not circuits.is_open("acme")
    circuits.record("acme", FAILED)
    assert not circuits.is_open("acme"), "a delivery starts the count of consecutive failures afresh"


def test_a_delivery_between_failures_resets_the_count_and_a_4xx_is_no_outage() -> None:
    circuits = TenantCircuits(failures_to_open=3, open_ttl=600, clock=ManualClock())
    for outcome in (FAILED, FAILED, DELIVERED, FAILED, FAILED, REJECTED):
        circuits.record("acme", outcome)
    assert not circuits.is_open("acme")
    circuits.record("acme", FAILED)
    assert circuits.is_open("acme"), "the 4xx neither counted nor reset the run of failures"
    circuits.record("acme", REJECTED)
    assert circuits.is_open("acme")


def test_an_open_circuit_closes_by_itself_once_no_failure_renews_it_for_open_ttl() -> None:
    clock = ManualClock()
    circuits = TenantCircuits(failures_to_open=1, open_ttl=600, clock=clock)
    circuits.record("acme", FAILED)
    clock.advance(500)
    circuits.record("acme", FAILED)  # renews: open until 500 + 600
    clock.advance(599)
    assert circuits.is_open("acme")
    clock.advance(2)
    assert not circuits.is_open("acme")


def test_config_refuses_bad_values_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^backpressure\.failures_to_open: must be at least 1"):
        config_from_mapping({"backpressure": {"failures_to_open": 0}})
    with pytest.raises(ConfigError, match=r"^backpressure\.redis_refresh: must be positive"):
        config_from_mapping({"backpressure": {"redis_refresh": 0}})
    assert config_from_mapping({}).backpressure == BackpressureConfig()


# ---- the gate ----------------------------------------------------------------------------------------------


async def test_gate_refuses_an_open_tenant_only_once_its_backlog_reaches_max_queued(tmp_path: Path) -> None:
    clock = ManualClock()
    spool = Spool(tmp_path, clock=clock).create()
    pressure = BackPressure(_config(failures_to_open=2, max_queued=3), spool, clock=clock)
    acme = _queue(spool, pressure, "acme", 2)
    _queue(spool, pressure, "globex", 5)
    _fail(pressure, "acme", 2)
    assert pressure.admits("acme"), "circuit open, but 2 queued is under max_queued"
    _queue(spool, pressure, "acme", 1)
    assert not pressure.admits("acme")
    assert pressure.admits("globex"), "globex has a backlog but its circuit is closed"
    pressure.outcome(acme[0], "acme", REJECTED)  # dead-lettered: off the backlog, circuit still open
    assert pressure.backlog.count("acme") == 2
    assert pressure.admits("acme")
    _queue(spool, pressure, "acme", 1)
    assert not pressure.admits("acme")
    pressure.outcome(acme[1], "acme", DELIVERED)
    assert pressure.admits("acme"), "the first delivery closes the circuit whatever the backlog"


async def test_gate_refuses_an_open_tenant_once_its_oldest_message_reaches_max_age(tmp_path: Path) -> None:
    clock = ManualClock()
    spool = Spool(tmp_path, clock=clock).create()
    pressure = BackPressure(_config(failures_to_open=1, max_queued=1000, max_age=600), spool, clock=clock)
    first = _queue(spool, pressure, "acme", 1)
    clock.advance(300)
    _queue(spool, pressure, "acme", 1)
    _fail(pressure, "acme", 1)
    assert pressure.admits("acme")
    clock.advance(299)
    assert pressure.admits("acme")
    clock.advance(1)
    assert not pressure.admits("acme")
    pressure.outcome(first[0], "acme", REJECTED)  # the oldest left: the next one is 300 s old
    assert pressure.backlog.oldest_age("acme", clock()) == pytest.approx(300)
    assert pressure.admits("acme")


async def test_backlog_is_rebuilt_from_the_spool_and_follows_messages_that_leave_it_otherwise(
    tmp_path: Path,
) -> None:
    spool = Spool(tmp_path).create()
    stored = spool.store([({"tenant": "acme"}, b"x") for _ in range(3)])
    spool.store([({"tenant": "globex"}, b"x")])
    spool.move(stored[2], INCOMING, DEFERRED)
    pressure = BackPressure(_config(), spool)
    await pressure.reconcile(starting=True)
    assert (pressure.backlog.count("acme"), pressure.backlog.count("globex")) == (3, 1)

    # Retries exhausted: dead-lettered after a Retry outcome, which the backlog does not count down.
    spool.move(stored[0], INCOMING, DEAD)
    await pressure.reconcile()
    assert pressure.backlog.count("acme") == 3, "one listing may miss a message that is moving"
    await pressure.reconcile()
    assert pressure.backlog.count("acme") == 2

    spool.move(stored[0], DEAD, INCOMING)  # `postroom dead-letter replay`
    await pressure.reconcile()
    assert pressure.backlog.count("acme") == 3


# ---- shared through Redis ----------------------------------------------------------------------------------


@asynccontextmanager
async def _nodes(
    url: str, tmp_path: Path, clock: ManualClock, **values: Any
) -> AsyncIterator[tuple[BackPressure, BackPressure]]:
    """Two nodes' back-pressure, each with its own spool and Redis client, sharing one Redis key."""
    cfg = _config(**values)
    clients = [Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0) for _ in range(2)]
    a, b = (
        BackPressure(cfg, Spool(tmp_path / name, clock=clock).create(), redis=client, clock=clock)
        for name, client in zip("ab", clients, strict=True)
    )
    try:
        yield a, b
    finally:
        for client in clients:
            await client.aclose()


async def test_a_circuit_opened_on_one_node_gates_the_other_and_a_delivery_there_closes_it(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    clock = ManualClock()
    async with _nodes(redis_server.url, tmp_path, clock, failures_to_open=3, max_queued=2) as (a, b):
        _queue(b.spool, b, "acme", 2)
        _fail(a, "acme", 3)
        assert a.circuits.is_open("acme") and not b.circuits.is_open("acme")
        await a.refresh()
        await b.refresh()
        assert not b.admits("acme"), "a's open circuit and b's own backlog of 2"
        assert b.admits("globex")

        b.outcome(b.spool.ids(INCOMING)[0], "acme", DELIVERED)
        await b.refresh()
        await a.refresh()
        assert not a.circuits.is_open("acme")
        _fail(a, "acme", 1)
        assert not a.circuits.is_open("acme"), "b's delivery restarted a's count of failures"


async def test_the_shared_circuit_expires_after_open_ttl_when_no_node_renews_it(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    clock = ManualClock()
    async with _nodes(redis_server.url, tmp_path, clock, failures_to_open=1, open_ttl=60) as (a, b):
        _fail(a, "acme", 1)
        await a.refresh()
        await b.refresh()
        assert b.circuits.is_open("acme")
        clock.advance(61)
        await b.refresh()
        assert not b.circuits.is_open("acme")
        assert b.store is not None
        assert await b.store.exchange({}, clock()) == {}, "expired entries are dropped from Redis"


async def test_the_background_refresh_spreads_an_opened_circuit_within_a_second_or_two(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with _nodes(redis_server.url, tmp_path, ManualClock(), failures_to_open=1, redis_refresh=0.2) as (
        a,
        b,
    ):
        await a.start()
        await b.start()
        try:
            _fail(a, "acme", 1)
            assert await eventually(lambda: b.circuits.is_open("acme"))
        finally:
            await a.stop()
            await b.stop()


async def test_redis_down_keeps_the_local_circuit_and_shares_it_when_redis_is_back(
    tmp_path: Path, redis_killable: RedisServer
) -> None:
    clock = ManualClock()
    async with _nodes(redis_killable.url, tmp_path, clock, failures_to_open=1) as (a, b):
        redis_killable.kill()
        _fail(a, "acme", 1)
        await a.refresh()  # fails quietly: the change stays queued for the next refresh
        assert a.circuits.is_open("acme")
        redis_killable.start()
        await a.refresh()
        await b.refresh()
        assert b.circuits.is_open("acme")


# ---- through the listener ----------------------------------------------------------------------------------


async def _rcpt_reply(port: int, rcpt: str) -> str:
    lines = ["EHLO c.example.org", "MAIL FROM:<ada@example.org>", f"RCPT TO:<{rcpt}>", "QUIT"]
    replies = await asyncio.to_thread(send_raw_dialogue, port, lines)
    return replies[-2]


async def _wait_for_reply(port: int, rcpt: str, prefix: str, timeout: float = 15.0) -> str:
    reply = ""
    for _ in range(int(timeout / 0.1)):
        reply = await _rcpt_reply(port, rcpt)
        if reply.startswith(prefix):
            break
        await asyncio.sleep(0.1)
    return reply


async def test_listener_answers_451_at_rcpt_for_a_backed_up_tenant_while_others_flow(tmp_path: Path) -> None:
    acme_down = True

    def helpdesk(ticket: ReceivedTicket) -> Response:
        return Response(503) if acme_down and ticket.tenant == "acme" else Response(200)

    receiver = TicketReceiver(SECRET, respond_with=helpdesk)
    await receiver.start()
    backpressure = {"failures_to_open": 2, "max_queued": 3}
    config = make_config(tmp_path / "spool", receiver.url, backpressure=backpressure)
    port = smtp_port(config)
    acme, globex = f"support@acme.{DOMAIN}", f"support@globex.{DOMAIN}"
    try:
        async with running(config):
            for _ in range(3):
                assert (await asyncio.to_thread(send, port, [acme])).code == 250
            assert await _wait_for_reply(port, acme, "451") == BACKPRESSURE_REPLY
            assert (await _rcpt_reply(port, globex)).startswith("250 ")
            assert (await asyncio.to_thread(send, port, [globex])).code == 250

            acme_down = False  # the next retry is delivered, which closes the circuit
            assert (await _wait_for_reply(port, acme, "250")).startswith("250 ")
            assert await receiver.wait_for_async(4, timeout=15)
    finally:
        await receiver.stop()
    assert sorted(t.tenant or "" for t in receiver.accepted) == ["acme"] * 3 + ["globex"]
