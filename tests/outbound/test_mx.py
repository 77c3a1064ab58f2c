"""MX lookup against the real test DNS server (NSD serving fixtures/dns/zones/dest.test.zone)."""

from __future__ import annotations

import random

import pytest

from outbound.mx import MxLookupError, MxTarget, order_by_preference, resolve_targets
from tests.servers.dns import DnsServer, UnresponsiveDnsServer

PORT = 2525


async def test_mx_hosts_come_in_preference_order(dns_server: DnsServer) -> None:
    targets = await resolve_targets("multi.dest.test", dns_server.resolver(), port=PORT)
    assert targets == [
        MxTarget("mx1.multi.dest.test", "127.0.0.21", PORT, 10),
        MxTarget("mx2.multi.dest.test", "127.0.0.22", PORT, 20),
    ]


async def test_equal_preferences_are_shuffled(dns_server: DnsServer) -> None:
    rng = random.Random(7)
    resolver = dns_server.resolver()
    orders = set()
    for _ in range(20):
        targets = await resolve_targets("equal.dest.test", resolver, port=PORT, rng=rng)
        orders.add(tuple(t.address for t in targets))
    assert orders == {("127.0.0.21", "127.0.0.22"), ("127.0.0.22", "127.0.0.21")}


async def test_domain_without_mx_falls_back_to_its_address(dns_server: DnsServer) -> None:
    targets = await resolve_targets("a-only.dest.test", dns_server.resolver(), port=PORT)
    assert targets == [MxTarget("a-only.dest.test", "127.0.0.23", PORT, 0)]


async def test_null_mx_is_a_permanent_failure(dns_server: DnsServer) -> None:
    with pytest.raises(MxLookupError) as caught:
        await resolve_targets("nullmx.dest.test", dns_server.resolver(), port=PORT)
    assert caught.value.permanent
    assert caught.value.status == "5.1.10"
    assert "null MX" in str(caught.value)


async def test_nonexistent_domain_is_a_permanent_failure(dns_server: DnsServer) -> None:
    with pytest.raises(MxLookupError) as caught:
        await resolve_targets("no-such-domain.dest.test", dns_server.resolver(), port=PORT)
    assert caught.value.permanent and caught.value.status == "5.1.2"


async def test_mx_without_address_is_temporary(dns_server: DnsServer) -> None:
    with pytest.raises(MxLookupError) as caught:
        await resolve_targets("noaddr.dest.test", dns_server.resolver(), port=PORT)
    assert not caught.value.permanent
    assert "nowhere.noaddr.dest.test" in str(caught.value)


async def test_servfail_is_temporary(dns_server: DnsServer) -> None:
    with pytest.raises(MxLookupError) as caught:
        await resolve_targets("servfail.test", dns_server.resolver(), port=PORT)
    assert not caught.value.permanent and caught.value.status == "4.4.3"


async def test_dns_timeout_is_temporary(unresponsive_dns: UnresponsiveDnsServer) -> None:
    resolver = DnsServer("127.0.0.1", unresponsive_dns.port).resolver(timeout=0.3)
    with pytest.raises(MxLookupError) as caught:
        await resolve_targets("multi.dest.test", resolver, port=PORT)
    assert not caught.value.permanent


async def test_smarthost_bypasses_mx_lookup(unresponsive_dns: UnresponsiveDnsServer) -> None:
    # The resolver never answers: only skipping the lookup can succeed.
    resolver = DnsServer("127.0.0.1", unresponsive_dns.port).resolver(timeout=0.3)
    targets = await resolve_targets("multi.dest.test", resolver, port=PORT, smarthost="127.0.0.30:2600")
    assert targets == [MxTarget("127.0.0.30", "127.0.0.30", 2600, 0)]
    default_port = await resolve_targets("x.test", resolver, port=PORT, smarthost="[127.0.0.30]")
    assert default_port == [MxTarget("127.0.0.30", "127.0.0.30", PORT, 0)]


async def test_smarthost_by_name_is_resolved(dns_server: DnsServer) -> None:
    targets = await resolve_targets(
        "elsewhere.example", dns_server.resolver(), port=PORT, smarthost="mx.senders.dest.test:2600"
    )
    assert targets == [MxTarget("mx.senders.dest.test", "127.0.0.30", 2600, 0)]


def test_order_by_preference_keeps_preference_and_shuffles_ties() -> None:
    records = [(20, "c"), (10, "a"), (10, "b"), (30, "d")]
    seen = {tuple(order_by_preference(records, random.Random(seed))) for seed in range(30)}
    assert seen == {
        ((10, "a"), (10, "b"), (20, "c"), (30, "d")),
        ((10, "b"), (10, "a"), (20, "c"), (30, "d")),
    }
