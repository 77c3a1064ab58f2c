from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

import dns.exception
import dns.name
import dns.nameserver
import dns.resolver
import pytest

from filters.resolver import (
    FrontCachedResolver,
    TtlCache,
    make_resolver,
    negative_ttl,
    parse_nameserver,
    sync_twin,
    uncached,
)
from postroom.core.config import DnsConfig
from tests.servers.dns import CountingDnsProxy, DnsServer, UnresponsiveDnsServer

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def test_nameservers_carry_their_ports() -> None:
    v6 = parse_nameserver("[::1]:5353")
    assert isinstance(v6, dns.nameserver.Do53Nameserver) and (v6.address, v6.port) == ("::1", 5353)
    v4 = parse_nameserver("192.0.2.53")
    assert (v4.address, v4.port) == ("192.0.2.53", 53)


def test_configured_resolver_uses_only_the_configured_servers_and_timeout() -> None:
    resolver = make_resolver(DnsConfig(nameservers=["127.0.0.1:5353", "127.0.0.2:5354"], timeout=1.5))
    servers = [
        (ns.address, ns.port) for ns in resolver.nameservers if isinstance(ns, dns.nameserver.Do53Nameserver)
    ]
    assert servers == [("127.0.0.1", 5353), ("127.0.0.2", 5354)]
    assert resolver.lifetime == 1.5 and resolver.timeout == 1.5
    assert resolver.search == [] and resolver.domain == dns.name.root  # nothing read from /etc/resolv.conf


@pytest.mark.integration
def test_configured_resolver_reaches_the_test_server(dns_server: DnsServer) -> None:
    resolver = make_resolver(dns_server.dns_config())
    answer = run(resolver.resolve("with-mx.sender.test.", "MX"))
    assert [r.exchange.to_text() for r in answer] == ["mail.sender.test."]


@pytest.mark.integration
def test_sync_twin_has_the_same_servers_and_limits(dns_server: DnsServer) -> None:
    resolver = make_resolver(dns_server.dns_config(timeout=1.25))
    twin = sync_twin(resolver)
    assert isinstance(twin, dns.resolver.Resolver)
    assert list(twin.nameservers) == list(resolver.nameservers) and twin.lifetime == 1.25
    assert [r.address for r in twin.resolve("a-only.sender.test.", "A")] == ["127.0.0.1"]


@pytest.mark.integration
def test_lookups_end_within_the_lifetime(unresponsive_dns: UnresponsiveDnsServer) -> None:
    resolver = make_resolver(DnsConfig(nameservers=[unresponsive_dns.nameserver], timeout=0.3))
    with pytest.raises(dns.exception.Timeout):
        run(resolver.resolve("a-only.sender.test.", "A"))


@pytest.mark.integration
def test_negative_ttl_comes_from_the_soa(dns_server: DnsServer) -> None:
    resolver = make_resolver(dns_server.dns_config())
    with pytest.raises(dns.resolver.NXDOMAIN) as nxdomain:
        run(resolver.resolve("9.0.0.127.dnsbl.test.", "A"))
    assert negative_ttl(nxdomain.value) == 60.0
    with pytest.raises(dns.resolver.NoAnswer) as nodata:
        run(resolver.resolve("66.0.0.127.dnsbl.test.", "AAAA"))
    assert negative_ttl(nodata.value) == 60.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_cache_entries_expire_after_their_ttl() -> None:
    clock = FakeClock()
    cache: TtlCache[str, int] = TtlCache(10, clock, max_ttl=100)
    cache.put("short", 1, ttl=5)
    cache.put("capped", 2, ttl=10_000)
    cache.put("never", 3, ttl=0)
    assert (cache.get("short"), cache.get("capped"), cache.get("never")) == (1, 2, None)
    clock.now = 5
    assert cache.get("short") is None and cache.get("capped") == 2
    clock.now = 100
    assert cache.get("capped") is None and len(cache) == 0


def test_cache_drops_the_least_recently_used_entry_when_full() -> None:
    cache: TtlCache[str, int] = TtlCache(2, FakeClock())
    cache.put("a", 1, 60)
    cache.put("b", 2, 60)
    assert cache.get("a") == 1  # "b" is now the least recently used
    cache.put("c", 3, 60)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)


def test_answers_are_shared_from_the_cache_by_every_lookup(counting_dns_proxy: CountingDnsProxy) -> None:
    cached = make_resolver(DnsConfig(nameservers=[counting_dns_proxy.nameserver]))
    twin = sync_twin(cached)  # what pyspf and dkimpy use in their worker threads
    asyncio.run(cached.resolve("pass.spf.test.", "MX", search=False))
    twin.resolve("pass.spf.test.", "MX", search=False)
    with pytest.raises(dns.resolver.NXDOMAIN):
        asyncio.run(cached.resolve("absent.sender.test.", "A", search=False))
    with pytest.raises(dns.resolver.NXDOMAIN):
        twin.resolve("absent.sender.test.", "A", search=False)
    assert counting_dns_proxy.count("pass.spf.test", "MX") == 1
    assert counting_dns_proxy.count("absent.sender.test", "A") == 1
    assert uncached(cached).cache is None

    plain = make_resolver(DnsConfig(nameservers=[counting_dns_proxy.nameserver], cache_size=0))
    for _ in range(2):
        asyncio.run(plain.resolve("with-mx.sender.test.", "MX", search=False))
    assert counting_dns_proxy.count("with-mx.sender.test", "MX") == 2


def front_only(proxy: CountingDnsProxy, skew: list[float]) -> FrontCachedResolver:
    """A front-cached resolver without dnspython's cache behind it: every miss reaches the server."""
    front = FrontCachedResolver(configure=False, max_entries=10, clock=lambda: time.time() + skew[0])
    front.nameservers = [parse_nameserver(proxy.nameserver)]
    front.cache = None
    return front


def test_front_cache_answers_until_the_answer_expires(counting_dns_proxy: CountingDnsProxy) -> None:
    skew = [0.0]  # seconds added to the front cache's clock
    front = front_only(counting_dns_proxy, skew)

    async def lookups() -> None:
        first = await front.resolve("pass.spf.test.", "MX", search=False)
        again = await front.resolve("PASS.spf.test.", "MX", search=False)  # names are case-insensitive
        assert again is first
        assert counting_dns_proxy.count("pass.spf.test", "MX") == 1
        skew[0] = first.expiration - time.time() + 1  # one second past its TTL
        await front.resolve("pass.spf.test.", "MX", search=False)
        assert counting_dns_proxy.count("pass.spf.test", "MX") == 2

    asyncio.run(lookups())


def test_front_cache_keeps_negative_answers_for_their_soa_ttl(counting_dns_proxy: CountingDnsProxy) -> None:
    skew = [0.0]  # seconds added to the front cache's clock
    front = front_only(counting_dns_proxy, skew)

    async def lookups() -> None:
        raised: list[dns.exception.DNSException] = []
        for _ in range(3):
            with pytest.raises(dns.resolver.NXDOMAIN) as nxdomain:
                await front.resolve("absent.sender.test.", "A", search=False)
            raised.append(nxdomain.value)
        with pytest.raises(dns.resolver.NoAnswer):
            await front.resolve("66.0.0.127.dnsbl.test.", "AAAA", search=False)
        with pytest.raises(dns.resolver.NoAnswer) as nodata:
            await front.resolve("66.0.0.127.dnsbl.test.", "AAAA", search=False)
        assert counting_dns_proxy.count("absent.sender.test", "A") == 1
        assert counting_dns_proxy.count("66.0.0.127.dnsbl.test", "AAAA") == 1
        # A new exception per hit, saying what dnspython's would.
        assert len({id(exc) for exc in raised}) == 3
        assert all(str(exc) == str(raised[0]) and "absent.sender.test" in str(exc) for exc in raised)
        assert negative_ttl(nodata.value) == 60.0
        skew[0] = 61.0  # past the zone's negative TTL (SOA minimum 60 s)
        with pytest.raises(dns.resolver.NXDOMAIN):
            await front.resolve("absent.sender.test.", "A", search=False)
        assert counting_dns_proxy.count("absent.sender.test", "A") == 2

    asyncio.run(lookups())
