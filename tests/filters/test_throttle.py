"""Throttle limits on both backends (in-process and a real redis-server), through filters.chain."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from filters.base import Mode, Transaction
from filters.throttle import counts_toward_block, tenant_key
from tests.filters.throttle_harness import Backend, ManualClock, backend_for, connect, mail, rcpt
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return backend_for(request)


def test_burst_over_the_connection_rate_is_refused_while_another_ip_is_served(backend: Backend) -> None:
    clock = ManualClock()

    async def scenario() -> None:
        async with backend.throttle(clock, ip_connections_per_minute=5) as flt:
            for i in range(5):
                decision, _ = await connect(flt, "127.0.0.10", f"a{i}")
                assert decision is None
            burst = [(await connect(flt, "127.0.0.10", f"b{i}"))[0] for i in range(10)]
            assert all(d is not None for d in burst)
            assert burst[0] is not None
            assert burst[0].render() == (
                "421 4.7.0 connection rate limit exceeded, try again later: "
                "limit reached for client 127.0.0.10"
            )
            for i in range(5):
                decision, _ = await connect(flt, "127.0.0.11", f"c{i}")
                assert decision is None
            clock.advance(60)
            decision, _ = await connect(flt, "127.0.0.10", "later")
            assert decision is None

    asyncio.run(scenario())


def test_window_slides_so_n_per_minute_never_admits_2n(backend: Backend) -> None:
    clock = ManualClock()

    async def scenario() -> list[bool]:
        admitted = []
        async with backend.throttle(clock, ip_messages_per_minute=3) as flt:
            # Three at the end of one minute, then more just after a fixed-window boundary would have reset.
            for offset in (58.0, 58.5, 59.0, 61.0, 117.9, 118.1, 118.2, 118.6, 119.1):
                clock.now = 1_790_000_000.0 + offset
                admitted.append(await mail(flt, "127.0.0.10", "") is None)
        return admitted

    # Each slot comes back exactly 60 s after the event that took it, never at a minute boundary.
    assert asyncio.run(scenario()) == [True, True, True, False, False, True, False, True, True]


def test_concurrency_slots_are_released_on_session_closed(backend: Backend) -> None:
    clock = ManualClock()

    async def scenario() -> None:
        async with backend.throttle(clock, ip_concurrency=2) as flt:
            first, conn1 = await connect(flt, "127.0.0.10", "s1")
            second, _ = await connect(flt, "127.0.0.10", "s2")
            third, _ = await connect(flt, "127.0.0.10", "s3")
            assert first is None and second is None
            assert third is not None and third.render().startswith(
                "421 4.7.0 too many concurrent connections"
            )
            other, _ = await connect(flt, "127.0.0.11", "t1")
            assert other is None
            await flt.session_closed(conn1)
            await flt.session_closed(conn1)  # idempotent: a second call must not free someone else's slot
            fourth, _ = await connect(flt, "127.0.0.10", "s4")
            fifth, _ = await connect(flt, "127.0.0.10", "s5")
            assert fourth is None
            assert fifth is not None and fifth.reason == "throttle.concurrency"

    asyncio.run(scenario())


def test_slot_of_a_session_never_closed_expires_with_its_lease(backend: Backend) -> None:
    clock = ManualClock()

    async def scenario() -> None:
        async with backend.throttle(clock, ip_concurrency=1, slot_lease=300.0) as flt:
            taken, _ = await connect(flt, "127.0.0.10", "crashed-node-session")
            assert taken is None
            refused, _ = await connect(flt, "127.0.0.10", "s2")
            assert refused is not None
            clock.advance(301)
            admitted, _ = await connect(flt, "127.0.0.10", "s3")
            assert admitted is None

    asyncio.run(scenario())


def test_message_rate_per_ip_and_per_sender(backend: Backend) -> None:
    clock = ManualClock()

    async def scenario() -> None:
        async with backend.throttle(clock, ip_messages_per_minute=3, sender_messages_per_minute=2) as flt:
            assert await mail(flt, "127.0.0.10", "alice@example.org") is None
            assert await mail(flt, "127.0.0.11", "ALICE@example.org") is None
            by_sender = await mail(flt, "127.0.0.12", "<alice@example.org>")
            assert by_sender is not None
            assert by_sender.render() == (
                "451 4.7.0 message rate limit exceeded, try again later: "
                "limit reached for sender alice@example.org"
            )
            # The null sender has no per-sender limit; the per-IP limit still applies.
            assert await mail(flt, "127.0.0.10", "") is None
            assert await mail(flt, "127.0.0.10", "") is None
            by_ip = await mail(flt, "127.0.0.10", "")
            assert by_ip is not None and by_ip.render().endswith("limit reached for client 127.0.0.10")

    asyncio.run(scenario())


def test_recipient_rate_per_ip(backend: Backend) -> None:
    clock = ManualClock()

    async def scenario() -> None:
        async with backend.throttle(clock, ip_recipients_per_minute=3) as flt:
            txn = Transaction(queue_id="Q1", mail_from="a@example.org")
            results = [await rcpt(flt, "127.0.0.10", txn, f"u{i}@acme.helpdesk.test") for i in range(4)]
            assert results[:3] == [None, None, None]
            assert results[3] is not None
            assert results[3].render().startswith("451 4.7.0 recipient rate limit exceeded")
            other = Transaction(queue_id="Q2", mail_from="a@example.org")
            assert await rcpt(flt, "127.0.0.11", other, "u@acme.helpdesk.test") is None

    asyncio.run(scenario())


def test_tenant_message_rate_counts_messages_not_recipients_and_spares_other_tenants(
    backend: Backend,
) -> None:
    clock = ManualClock()

    async def scenario() -> None:
        async with backend.throttle(clock, tenant_messages_per_minute=2) as flt:
            for i in range(2):
                txn = Transaction(queue_id=f"Q{i}", mail_from="a@example.org")
                for user in ("help", "billing", "sales"):  # three recipients, one message for the tenant
                    assert await rcpt(flt, "127.0.0.10", txn, f"{user}@acme.helpdesk.test") is None
            txn = Transaction(queue_id="Q9", mail_from="a@example.org")
            refused = await rcpt(flt, "127.0.0.10", txn, "help@ACME.helpdesk.test")
            assert refused is not None
            assert refused.render().endswith("limit reached for tenant acme.helpdesk.test")
            assert await rcpt(flt, "127.0.0.10", txn, "help@globex.helpdesk.test") is None
            assert txn.rcpt_to == ["help@globex.helpdesk.test"]

    asyncio.run(scenario())


def test_observe_mode_records_but_does_not_refuse(backend: Backend) -> None:
    clock = ManualClock()

    async def scenario() -> None:
        async with backend.throttle(clock, ip_connections_per_minute=1, mode=Mode.OBSERVE) as flt:
            await connect(flt, "127.0.0.10", "s1")
            decision, conn = await connect(flt, "127.0.0.10", "s2")
            assert decision is None
            assert conn.verdicts[0].action == "observe:tempfail"
            assert conn.verdicts[0].reason == "throttle.connection_rate"

    asyncio.run(scenario())


def test_two_throttles_sharing_redis_admit_n_in_total(redis_server: RedisServer) -> None:
    backend = Backend("redis", redis_url=redis_server.url)
    clock = ManualClock()

    async def node(flt_index: int) -> int:
        async with backend.throttle(clock, ip_connections_per_minute=20) as flt:
            results = await asyncio.gather(
                *(connect(flt, "127.0.0.10", f"n{flt_index}-{i}") for i in range(50))
            )
            return sum(decision is None for decision, _ in results)

    async def scenario() -> list[int]:
        return list(await asyncio.gather(node(1), node(2)))

    admitted = asyncio.run(scenario())
    assert sum(admitted) == 20


_NODE_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from tests.filters.throttle_harness import Backend, ManualClock, mail

    async def main() -> None:
        backend = Backend("redis", redis_url=sys.argv[1], prefix=sys.argv[2])
        async with backend.throttle(ManualClock(), ip_messages_per_minute=25) as flt:
            results = await asyncio.gather(*(mail(flt, "127.0.0.10", "") for _ in range(40)))
        print(sum(r is None for r in results))

    asyncio.run(main())
    """
)


def test_two_postroom_processes_sharing_redis_enforce_one_global_limit(redis_server: RedisServer) -> None:
    prefix = Backend("redis").prefix
    nodes = [
        subprocess.Popen(
            [sys.executable, "-c", _NODE_SCRIPT, redis_server.url, prefix],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=60) for node in nodes]
    assert all(node.returncode == 0 for node in nodes), outputs
    admitted = [int(out.strip()) for out, _ in outputs]
    assert sum(admitted) == 25  # 80 attempts from two processes, one shared limit of 25


def test_redis_down_is_a_temporary_failure_and_fail_open_is_flagged(redis_killable: RedisServer) -> None:
    backend = Backend("redis", redis_url=redis_killable.url)
    redis_killable.kill()
    clock = ManualClock()

    async def scenario() -> None:
        async with backend.throttle(clock, ip_connections_per_minute=5, ip_concurrency=5) as flt:
            decision, conn = await connect(flt, "127.0.0.10", "s1")
            assert decision is not None
            assert decision.render().startswith("451 4.7.1 temporary failure in message checks")
            assert conn.verdicts[0].reason == "throttle.unavailable"
            await flt.session_closed(conn)  # logged, never raised into the listener
            await flt.record_refusal(conn, "dnsbl.listed")
        async with backend.throttle(clock, ip_connections_per_minute=5, fail_open=True) as flt:
            decision, conn = await connect(flt, "127.0.0.10", "s2")
            assert decision is None
            assert (conn.verdicts[0].result, conn.verdicts[0].failed_open) == ("temperror", True)

    asyncio.run(scenario())


def test_tenant_key_is_the_recipient_domain() -> None:
    assert tenant_key("help+42@Acme.Helpdesk.Example") == "acme.helpdesk.example"
    assert tenant_key("<help@acme.helpdesk.example>") == "acme.helpdesk.example"


@pytest.mark.parametrize(
    ("reason", "counts"),
    [
        ("dnsbl.listed", True),
        ("routing", True),
        ("throttle.message_rate", True),
        ("spf.fail", True),
        ("throttle.blocked", False),
        ("spam.greylist", False),
        ("clamav.unavailable", False),
        ("spf.temperror", False),
    ],
)
def test_only_refusals_the_client_earned_count_toward_a_block(reason: str, counts: bool) -> None:
    assert counts_toward_block(reason) is counts
