from __future__ import annotations

import asyncio

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import pytest

from tests.servers.dns import (
    HOST,
    CountingDnsProxy,
    DnsServer,
    UnresponsiveDnsServer,
    fixture_zones,
)

pytestmark = pytest.mark.integration


def _query(server: DnsServer, name: str, rdtype: str) -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), server.host, port=server.port, timeout=2)


def test_every_fixture_zone_is_served_authoritatively(dns_server: DnsServer) -> None:
    zones = fixture_zones()
    assert {".", "dnsbl.test.", "spf.test.", "127.in-addr.arpa."} <= set(zones)
    for origin in zones:
        response = _query(dns_server, origin, "SOA")
        assert response.rcode() == dns.rcode.NOERROR, origin
        assert response.flags & dns.flags.AA, origin


def test_fixture_records_resolve_through_the_resolver_helper(dns_server: DnsServer) -> None:
    async def scenario() -> list[str]:
        answer = await dns_server.resolver().resolve("66.0.0.127.dnsbl.test.", "A")
        return [rdata.to_text() for rdata in answer]

    assert asyncio.run(scenario()) == ["127.0.0.2"]
    assert dns_server.nameserver == f"{HOST}:{dns_server.port}"
    assert dns_server.dns_config().nameservers == [dns_server.nameserver]


def test_names_outside_the_test_zones_get_nxdomain_not_refused(dns_server: DnsServer) -> None:
    response = _query(dns_server, "www.example.com", "A")
    assert response.rcode() == dns.rcode.NXDOMAIN
    assert response.flags & dns.flags.AA


def test_servfail_zone_answers_servfail(dns_server: DnsServer) -> None:
    assert _query(dns_server, "_spf.servfail.test", "TXT").rcode() == dns.rcode.SERVFAIL


def test_rate_limiting_is_off_for_loopback_bursts(dns_server: DnsServer) -> None:
    # NSD's default RRL (200 qps per source) would drop or truncate part of this burst.
    truncated = 0
    for _ in range(600):
        response = _query(dns_server, "2.0.0.127.dnsbl.test", "A")
        assert response.rcode() == dns.rcode.NOERROR
        truncated += bool(response.flags & dns.flags.TC)
    assert truncated == 0


def test_unresponsive_server_times_out(unresponsive_dns: UnresponsiveDnsServer) -> None:
    with pytest.raises(dns.exception.Timeout):
        dns.query.udp(dns.message.make_query("a.test", "A"), HOST, port=unresponsive_dns.port, timeout=0.2)


def test_counting_proxy_forwards_and_counts(counting_dns_proxy: CountingDnsProxy) -> None:
    for _ in range(2):
        response = dns.query.udp(
            dns.message.make_query("with-mx.sender.test", "MX"), HOST, port=counting_dns_proxy.port, timeout=2
        )
        assert response.rcode() == dns.rcode.NOERROR and response.answer
    assert counting_dns_proxy.count("with-mx.sender.test.", "mx") == 2
    assert counting_dns_proxy.total() == 2
