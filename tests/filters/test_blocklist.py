"""The dynamic block-list: file and Redis backends, lookups, and the throttle's auto-block."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from redis.asyncio import Redis

from filters.blocklist import BlockEntry, LocalBlockList, parse_network
from filters.blocklist_redis import RedisBlockList
from tests.filters.throttle_harness import Backend, ManualClock, backend_for, connect
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.integration
NOW = 1_790_000_000.0


def entry(network: str, seconds: float = 600.0, reason: str = "test") -> BlockEntry:
    return BlockEntry(parse_network(network), reason, NOW + seconds, NOW)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return backend_for(request)


def test_lookup_matches_addresses_networks_and_mapped_ipv4(tmp_path: Path) -> None:
    async def scenario() -> None:
        blocklist = LocalBlockList(tmp_path / "blocklist.json")
        await blocklist.add(entry("127.0.0.66"))
        await blocklist.add(entry("127.0.1.0/24", reason="net"))
        await blocklist.add(entry("2001:db8::/48"))
        assert (await blocklist.lookup("127.0.0.66", NOW)) is not None
        assert (await blocklist.lookup("::ffff:127.0.0.66", NOW)) is not None
        found = await blocklist.lookup("127.0.1.200", NOW)
        assert found is not None and found.reason == "net"
        assert (await blocklist.lookup("2001:db8:0:1::5", NOW)) is not None
        assert (await blocklist.lookup("127.0.0.67", NOW)) is None
        assert (await blocklist.lookup("2001:db9::1", NOW)) is None
        assert (await blocklist.lookup("127.0.0.66", NOW + 601)) is None  # expired

    asyncio.run(scenario())


def test_file_is_shared_with_another_process_and_written_atomically(tmp_path: Path) -> None:
    path = tmp_path / "spool" / "blocklist.json"

    async def scenario() -> None:
        server, cli = LocalBlockList(path), LocalBlockList(path)
        assert await server.lookup("127.0.0.66", NOW) is None
        await cli.add(entry("127.0.0.66"))
        assert await server.lookup("127.0.0.66", NOW) is not None  # reloaded on change, no restart
        assert await cli.remove("127.0.0.66/32")
        assert not await cli.remove("127.0.0.66/32")
        assert await server.lookup("127.0.0.66", NOW) is None

    asyncio.run(scenario())
    assert json.loads(path.read_text()) == {"version": 1, "entries": []}
    assert sorted(p.name for p in path.parent.iterdir()) == ["blocklist.json", "blocklist.json.lock"]


def test_concurrent_writers_lose_no_entry(tmp_path: Path) -> None:
    path = tmp_path / "blocklist.json"

    async def scenario() -> None:
        writers = [LocalBlockList(path) for _ in range(3)]
        await asyncio.gather(
            *(w.add(entry(f"127.0.{n}.{i}")) for n, w in enumerate(writers) for i in range(15))
        )

    asyncio.run(scenario())
    assert len(json.loads(path.read_text())["entries"]) == 45


def test_corrupt_file_keeps_the_last_good_list(tmp_path: Path) -> None:
    path = tmp_path / "blocklist.json"

    async def scenario() -> None:
        server = LocalBlockList(path)
        await LocalBlockList(path).add(entry("127.0.0.66"))
        assert await server.lookup("127.0.0.66", NOW) is not None
        path.write_text("{ not json")
        assert await server.lookup("127.0.0.66", NOW) is not None

    asyncio.run(scenario())


def test_redis_blocklist_is_shared_between_nodes(redis_server: RedisServer) -> None:
    prefix = Backend("redis").prefix

    async def scenario() -> None:
        a_client, b_client = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
        try:
            node_a, node_b = RedisBlockList(a_client, prefix), RedisBlockList(b_client, prefix)
            assert await node_b.lookup("127.0.0.66", NOW) is None
            await node_a.add(entry("127.0.0.66"))
            await node_a.add(entry("127.0.0.99", seconds=-1))  # already expired
            assert await node_b.lookup("127.0.0.66", NOW) is not None
            assert [e.network for e in await node_b.entries(NOW)] == ["127.0.0.66/32"]
            assert await a_client.hlen(f"{prefix}blocklist") == 1  # listing purged the expired entry
            assert await node_b.remove("127.0.0.66/32")
            assert await node_a.lookup("127.0.0.66", NOW) is None
        finally:
            await a_client.aclose()
            await b_client.aclose()

    asyncio.run(scenario())


def test_repeated_refusals_auto_block_until_expiry(backend: Backend) -> None:
    clock = ManualClock(NOW)

    async def scenario() -> None:
        settings = {"auto_block_rejects": 3, "auto_block_window": 60.0, "block_duration": 600.0}
        async with backend.throttle(clock, **settings) as flt:
            _, conn = await connect(flt, "127.0.0.66", "s1")
            for _ in range(2):
                await flt.record_refusal(conn, "dnsbl.listed")
            assert (await connect(flt, "127.0.0.66", "s2"))[0] is None
            await flt.record_refusal(conn, "routing")
            decision, _ = await connect(flt, "127.0.0.66", "s3")
            assert decision is not None
            assert decision.render().startswith("554 5.7.1 client blocked: 127.0.0.66 blocked until ")
            assert (await connect(flt, "127.0.0.67", "s4"))[0] is None
            listed = await flt.blocklist.entries(clock())
            assert [(e.network, e.source) for e in listed] == [("127.0.0.66/32", "auto")]
            clock.advance(601)
            assert (await connect(flt, "127.0.0.66", "s5"))[0] is None

    asyncio.run(scenario())


def test_refusals_spread_beyond_the_window_or_not_earned_do_not_block(backend: Backend) -> None:
    clock = ManualClock(NOW)

    async def scenario() -> None:
        settings = {"auto_block_rejects": 3, "auto_block_window": 60.0}
        async with backend.throttle(clock, **settings) as flt:
            _, conn = await connect(flt, "127.0.0.66", "s1")
            for _ in range(5):  # a scanner outage or greylisting is not the client's fault
                await flt.record_refusal(conn, "clamav.unavailable")
                await flt.record_refusal(conn, "spam.greylist")
            for _ in range(4):
                await flt.record_refusal(conn, "dnsbl.listed")
                clock.advance(31)  # never three within 60 s
            assert (await connect(flt, "127.0.0.66", "s2"))[0] is None

    asyncio.run(scenario())


def test_a_blocked_client_is_not_reblocked_by_its_own_refusals(backend: Backend) -> None:
    clock = ManualClock(NOW)

    async def scenario() -> None:
        settings = {"auto_block_rejects": 2, "auto_block_window": 600.0, "block_duration": 60.0}
        async with backend.throttle(clock, **settings) as flt:
            _, conn = await connect(flt, "127.0.0.66", "s1")
            await flt.record_refusal(conn, "dnsbl.listed")
            await flt.record_refusal(conn, "dnsbl.listed")
            for _ in range(5):
                decision, _ = await connect(flt, "127.0.0.66", "again")
                assert decision is not None and decision.reason == "throttle.blocked"
                await flt.record_refusal(conn, decision.reason)
            clock.advance(61)
            assert (await connect(flt, "127.0.0.66", "after"))[0] is None

    asyncio.run(scenario())
