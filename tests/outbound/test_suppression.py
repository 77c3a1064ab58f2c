"""The suppression list on both backends: the JSON file and a real redis-server."""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio

from outbound.suppression import (
    SUPPRESSION_FILE,
    MemorySuppressionList,
    RedisSuppressionList,
    SuppressionError,
    SuppressionList,
    normalize_address,
    open_suppression,
)
from postroom.app.config import config_from_mapping
from tests.outbound.submission_fixtures import FakeClock
from tests.servers.daemon import free_port
from tests.servers.redis import RedisServer

Scenario = Callable[[SuppressionList, FakeClock], Awaitable[None]]


@pytest.fixture(params=["memory", "redis"])
def run_on_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[Scenario], None]:
    """Runs a scenario against a fresh list of the parametrised backend, with a wall clock it may read."""

    @asynccontextmanager
    async def backend(clock: FakeClock) -> AsyncIterator[SuppressionList]:
        if request.param == "memory":
            yield MemorySuppressionList(tmp_path / SUPPRESSION_FILE, clock=clock)
            return
        server: RedisServer = request.getfixturevalue("redis_server")
        client = redis.asyncio.from_url(server.url)
        try:
            yield RedisSuppressionList(client, prefix=f"test:{secrets.token_hex(4)}:", clock=clock)
        finally:
            await client.aclose()

    def run(scenario: Scenario) -> None:
        async def main() -> None:
            clock = FakeClock(1_700_000_000.0)
            async with backend(clock) as suppression:
                await scenario(suppression, clock)

        asyncio.run(asyncio.wait_for(main(), timeout=30))

    return run


def test_lookup_is_case_insensitive_and_keeps_the_entry(run_on_backend: Callable[[Scenario], None]) -> None:
    async def scenario(suppression: SuppressionList, clock: FakeClock) -> None:
        await suppression.add(
            "<Bob.Smith@Example.COM.>", reason="550 5.1.1 no such user", source="bounce", ttl=3600
        )
        entry = await suppression.lookup("bob.smith@example.com")
        assert entry is not None
        assert entry.address == "Bob.Smith@example.com"  # local part as given, domain lowercased
        assert (entry.reason, entry.source) == ("550 5.1.1 no such user", "bounce")
        assert (entry.created_at, entry.expires_at) == (clock.now, clock.now + 3600)
        assert await suppression.lookup("BOB.SMITH@EXAMPLE.COM") == entry
        assert await suppression.lookup("bob.smith2@example.com") is None

    run_on_backend(scenario)


def test_remove_lifts_the_suppression_once(run_on_backend: Callable[[Scenario], None]) -> None:
    async def scenario(suppression: SuppressionList, clock: FakeClock) -> None:
        await suppression.add("alice@example.com", reason="complaint", source="complaint", ttl=None)
        assert await suppression.remove("ALICE@example.com") is True
        assert await suppression.lookup("alice@example.com") is None
        assert await suppression.remove("alice@example.com") is False
        assert await suppression.entries() == []

    run_on_backend(scenario)


def test_adding_again_replaces_the_entry_and_entries_are_oldest_first(
    run_on_backend: Callable[[Scenario], None],
) -> None:
    async def scenario(suppression: SuppressionList, clock: FakeClock) -> None:
        await suppression.add("first@example.com", reason="bounce", source="bounce", ttl=600)
        clock.advance(1)
        await suppression.add("second@example.com", reason="bounce", source="bounce", ttl=600)
        clock.advance(1)
        await suppression.add("FIRST@example.com", reason="operator: permanent", source="cli", ttl=None)
        entries = await suppression.entries()
        assert [(e.address, e.expires_at) for e in entries] == [
            ("second@example.com", clock.now - 1 + 600),
            ("FIRST@example.com", None),
        ]
        assert entries[1].reason == "operator: permanent"

    run_on_backend(scenario)


def test_bad_input_is_refused(run_on_backend: Callable[[Scenario], None]) -> None:
    async def scenario(suppression: SuppressionList, clock: FakeClock) -> None:
        with pytest.raises(ValueError, match="not an email address"):
            await suppression.add("no-at-sign", reason="", source="cli", ttl=None)
        with pytest.raises(ValueError, match="ttl must be positive"):
            await suppression.add("a@example.com", reason="", source="cli", ttl=0)
        assert await suppression.entries() == []

    run_on_backend(scenario)


def test_normalize_address() -> None:
    assert normalize_address(" <Jo@Ex.ORG> ") == "Jo@ex.org"
    assert normalize_address('"odd@local"@Example.com') == '"odd@local"@example.com'
    for bad in ("", "@example.com", "local@", "a b@example.com"):
        with pytest.raises(ValueError):
            normalize_address(bad)


# ---- the JSON file ----------------------------------------------------------------------------------------


def test_memory_entries_expire_on_the_clock_and_are_dropped_from_the_file(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = FakeClock()
        suppression = MemorySuppressionList(tmp_path / SUPPRESSION_FILE, clock=clock)
        await suppression.add("short@example.com", reason="bounce", source="bounce", ttl=60)
        await suppression.add("long@example.com", reason="bounce", source="bounce", ttl=3600)
        clock.advance(59)
        assert await suppression.lookup("short@example.com") is not None
        clock.advance(1)
        assert await suppression.lookup("short@example.com") is None
        assert [e.address for e in await suppression.entries()] == ["long@example.com"]
        await suppression.add("new@example.com", reason="bounce", source="bounce", ttl=None)  # a write prunes
        assert "short@example.com" not in (tmp_path / SUPPRESSION_FILE).read_text()

    asyncio.run(scenario())


def test_a_second_instance_sees_changes_made_by_the_first(tmp_path: Path) -> None:
    async def scenario() -> None:
        server_side = MemorySuppressionList(tmp_path / SUPPRESSION_FILE)
        cli_side = MemorySuppressionList(tmp_path / SUPPRESSION_FILE)
        assert await server_side.lookup("x@example.com") is None
        await cli_side.add("x@example.com", reason="manual", source="cli", ttl=None)
        assert await server_side.lookup("x@example.com") is not None
        assert await server_side.remove("x@example.com")
        assert await cli_side.lookup("x@example.com") is None

    asyncio.run(scenario())


def test_concurrent_writers_lose_no_entry(tmp_path: Path) -> None:
    def writer(prefix: str) -> None:
        suppression = MemorySuppressionList(tmp_path / SUPPRESSION_FILE)

        async def add_all() -> None:
            for i in range(40):
                await suppression.add(f"{prefix}{i}@example.com", reason="bounce", source="bounce", ttl=None)

        asyncio.run(add_all())

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("a", "b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    entries = asyncio.run(MemorySuppressionList(tmp_path / SUPPRESSION_FILE).entries())
    assert len(entries) == 120
    assert sorted(p.name for p in tmp_path.iterdir()) == [SUPPRESSION_FILE, f"{SUPPRESSION_FILE}.lock"]


def test_an_unreadable_file_is_an_error_not_an_empty_list(tmp_path: Path) -> None:
    (tmp_path / SUPPRESSION_FILE).write_text("{not json")
    suppression = MemorySuppressionList(tmp_path / SUPPRESSION_FILE)
    with pytest.raises(SuppressionError, match="not a valid suppression file"):
        asyncio.run(suppression.lookup("a@example.com"))


def test_open_suppression_uses_the_file_in_the_outbound_spool_without_redis(tmp_path: Path) -> None:
    cfg = config_from_mapping({"spool": {"path": str(tmp_path / "spool")}})
    suppression = open_suppression(cfg, None)
    assert isinstance(suppression, MemorySuppressionList)
    assert suppression.path == tmp_path / "spool" / "outbound" / SUPPRESSION_FILE


# ---- Redis ------------------------------------------------------------------------------------------------


def test_redis_entries_expire_with_the_key_ttl_and_leave_the_index(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        client = redis.asyncio.from_url(redis_server.url)
        try:
            assert isinstance(open_suppression(config_from_mapping({}), client), RedisSuppressionList)
            suppression = RedisSuppressionList(client, prefix=f"test:{secrets.token_hex(4)}:")
            await suppression.add("brief@example.com", reason="bounce", source="bounce", ttl=0.3)
            await suppression.add("kept@example.com", reason="bounce", source="bounce", ttl=None)
            ttl_ms = await client.pttl(f"{suppression.prefix}entry:brief@example.com")
            assert 0 < ttl_ms <= 300
            assert await suppression.lookup("brief@example.com") is not None
            for _ in range(100):  # until Redis has expired the key (its TTL is 0.3 s): at most 5 s
                if not await client.exists(f"{suppression.prefix}entry:brief@example.com"):
                    break
                await asyncio.sleep(0.05)
            assert await suppression.lookup("brief@example.com") is None
            assert [e.address for e in await suppression.entries()] == ["kept@example.com"]
            assert await client.zrange(f"{suppression.prefix}index", 0, -1) == [b"kept@example.com"]
            assert await client.ttl(f"{suppression.prefix}entry:kept@example.com") == -1  # no expiry
            assert await suppression.remove("kept@example.com")
        finally:
            await client.aclose()

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))


def test_two_nodes_share_one_redis_list(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        node_a, node_b = redis.asyncio.from_url(redis_server.url), redis.asyncio.from_url(redis_server.url)
        try:
            prefix = f"test:{secrets.token_hex(4)}:"
            await RedisSuppressionList(node_a, prefix=prefix).add(
                "x@example.com", reason="r", source="bounce", ttl=60
            )
            assert await RedisSuppressionList(node_b, prefix=prefix).lookup("X@EXAMPLE.COM") is not None
        finally:
            await node_a.aclose()
            await node_b.aclose()

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))


def test_redis_down_is_a_suppression_error() -> None:
    async def scenario() -> None:
        client = redis.asyncio.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=1)
        try:
            suppression = RedisSuppressionList(client)
            with pytest.raises(SuppressionError, match="unavailable"):
                await suppression.lookup("a@example.com")
            with pytest.raises(SuppressionError):
                await suppression.add("a@example.com", reason="r", source="bounce", ttl=None)
        finally:
            await client.aclose()

    asyncio.run(asyncio.wait_for(scenario(), timeout=30))
