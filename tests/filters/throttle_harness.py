"""Shared set-up for the throttle and block-list tests: both backends, a hand-driven clock, stage runners."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import dns.asyncresolver
import pytest
from redis.asyncio import Redis

from filters.base import Connection, Stage, Transaction
from filters.chain import ChainLink, Decision, FilterChain
from filters.config import ThrottleConfig
from filters.deps import FilterDeps
from filters.throttle import ThrottleFilter, build
from tests.servers.redis import RedisServer

# Every limit off: each test switches on the one it is about.
NO_LIMITS: dict[str, Any] = {
    "ip_concurrency": 0,
    "ip_connections_per_minute": 0,
    "ip_messages_per_minute": 0,
    "ip_recipients_per_minute": 0,
    "sender_messages_per_minute": 0,
    "tenant_messages_per_minute": 0,
    "auto_block_rejects": 0,
}


class ManualClock:
    """Wall-clock time that only moves when the test says so."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    """In-process state, or a real redis-server under a key prefix of the test's own."""

    name: str
    redis_url: str = ""
    prefix: str = field(default_factory=lambda: f"postroom-test:{uuid.uuid4().hex[:8]}:")

    @asynccontextmanager
    async def throttle(self, clock: ManualClock, **settings: Any) -> AsyncIterator[ThrottleFilter]:
        """A throttle filter with NO_LIMITS overridden by `settings`; Redis clients are per event loop."""
        cfg = ThrottleConfig(
            enabled=True, timeout=2.0, redis_key_prefix=self.prefix, **{**NO_LIMITS, **settings}
        )
        client = Redis.from_url(self.redis_url) if self.redis_url else None
        deps = FilterDeps(
            resolver=dns.asyncresolver.Resolver(configure=False),
            hostname="mx.postroom.test",
            redis=client,
            clock=clock,
        )
        try:
            yield build(cfg, deps)
        finally:
            if client is not None:
                await client.aclose()


def backend_for(request: pytest.FixtureRequest) -> Backend:
    """For a fixture parametrized with "memory" / "redis"."""
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return Backend("redis", redis_url=server.url)
    return Backend("memory")


async def connect(flt: ThrottleFilter, ip: str, session: str) -> tuple[Decision | None, Connection]:
    conn = Connection(session_id=session, peer_ip=ip)
    return await FilterChain([ChainLink(flt, flt.cfg)]).run(Stage.CONNECT, conn, None), conn


async def mail(flt: ThrottleFilter, ip: str, sender: str) -> Decision | None:
    txn = Transaction(queue_id=uuid.uuid4().hex[:10], mail_from=sender)
    return await FilterChain([ChainLink(flt, flt.cfg)]).run(
        Stage.MAIL, Connection(session_id="s", peer_ip=ip), txn
    )


async def rcpt(flt: ThrottleFilter, ip: str, txn: Transaction, address: str) -> Decision | None:
    """One RCPT TO, recorded in the transaction when accepted (as the listener does)."""
    txn.rcpt = address
    decision = await FilterChain([ChainLink(flt, flt.cfg)]).run(
        Stage.RCPT, Connection(session_id="s", peer_ip=ip), txn
    )
    txn.rcpt = ""
    if decision is None:
        txn.rcpt_to.append(address)
    return decision
