from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from filters.base import Connection, Mode, Outcome, Result, Stage
from filters.chain import ChainLink, Decision, FilterChain
from filters.config import DnsblConfig
from filters.deps import FilterDeps
from filters.dnsbl import DnsblFilter, Status, build, classify_codes, query_name
from filters.resolver import make_resolver
from postroom.core.config import DnsConfig
from tests.servers.dns import CountingDnsProxy, DnsServer, UnresponsiveDnsServer

pytestmark = pytest.mark.integration
T = TypeVar("T")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def make_filter(nameserver: str, zones: list[str], clock: FakeClock | None = None, **cfg: Any) -> DnsblFilter:
    resolver = make_resolver(DnsConfig(nameservers=[nameserver], timeout=cfg.pop("dns_timeout", 2.0)))
    deps = FilterDeps(resolver=resolver, hostname="mx.postroom.test", monotonic=clock or FakeClock())
    flt = build(DnsblConfig(enabled=True, zones=zones, **cfg), deps)
    assert isinstance(flt, DnsblFilter)
    return flt


def check(flt: DnsblFilter, ip: str) -> Result:
    return run(flt.check(Stage.CONNECT, Connection("s1", ip), None))


def test_query_names_follow_rfc_5782() -> None:
    assert query_name(ipaddress.IPv4Address("192.0.2.99"), "dnsbl.test") == "99.2.0.192.dnsbl.test."
    v6 = query_name(ipaddress.IPv6Address("2001:db8:1:2:3:4:567:89ab"), "dnsbl.test.")
    assert v6 == "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.dnsbl.test."


def test_return_codes_are_listings_only_inside_127_outside_the_error_range() -> None:
    assert classify_codes(["127.0.0.2"])[0] is Status.LISTED
    assert classify_codes(["127.0.0.10", "127.0.0.4"])[0] is Status.LISTED
    status, problem = classify_codes(["127.255.255.254"])
    assert status is Status.ZONE_ERROR and "query refused" in problem
    assert classify_codes(["127.255.255.252"])[0] is Status.ZONE_ERROR
    assert classify_codes(["192.0.2.1"])[0] is Status.ZONE_ERROR  # a parked domain's wildcard
    assert classify_codes(["127.0.0.1"])[0] is Status.ZONE_ERROR


def test_listed_ipv4_client_fails_naming_zone_code_and_reason(dns_server: DnsServer) -> None:
    result = check(make_filter(dns_server.nameserver, ["dnsbl.test"]), "127.0.0.66")
    assert result.outcome is Outcome.FAIL and result.reason == "dnsbl.listed"
    assert result.detail.startswith("127.0.0.66 listed by dnsbl.test (127.0.0.2: 127.0.0.66 is a test spam")
    assert result.data["listed"][0]["zone"] == "dnsbl.test"


def test_listed_ipv6_client_and_ipv4_mapped_client_are_found(dns_server: DnsServer) -> None:
    flt = make_filter(dns_server.nameserver, ["dnsbl.test"])
    v6 = check(flt, "2001:db8::66")
    assert v6.outcome is Outcome.FAIL and "dnsbl.test (127.0.0.3: 2001:db8::66 is a test" in v6.detail
    mapped = check(flt, "::ffff:127.0.0.66")
    assert mapped.outcome is Outcome.FAIL and mapped.detail.startswith("127.0.0.66 listed by dnsbl.test")
    assert check(flt, "2001:db8::67").outcome is Outcome.PASS


def test_every_return_code_is_reported(dns_server: DnsServer) -> None:
    result = check(make_filter(dns_server.nameserver, ["dnsbl.test"]), "127.0.0.67")
    assert result.outcome is Outcome.FAIL
    assert result.data["listed"][0]["codes"] == ["127.0.0.10", "127.0.0.4"]


def test_unlisted_client_passes(dns_server: DnsServer) -> None:
    result = check(make_filter(dns_server.nameserver, ["dnsbl.test"]), "127.0.0.5")
    assert result.outcome is Outcome.PASS
    assert result.detail == "127.0.0.5 not listed in dnsbl.test"


def test_allow_listed_client_is_not_looked_up(counting_dns_proxy: CountingDnsProxy) -> None:
    flt = make_filter(counting_dns_proxy.nameserver, ["dnsbl.test"], allow=["127.0.0.64/28"])
    result = check(flt, "127.0.0.66")
    assert result.outcome is Outcome.SKIP and "allow-listed" in result.detail
    assert counting_dns_proxy.total() == 0


def test_query_refused_code_is_a_zone_error_not_a_listing(
    dns_server: DnsServer, caplog: pytest.LogCaptureFixture
) -> None:
    flt = make_filter(dns_server.nameserver, ["dnsbl.test"])
    with caplog.at_level(logging.WARNING, logger="postroom.filters.dnsbl"):
        result = check(flt, "127.0.0.77")
    assert result.outcome is Outcome.PASS
    assert "skipped dnsbl.test: answered 127.255.255.254: query refused" in result.detail
    assert result.data["skipped"] == {
        "dnsbl.test": "answered 127.255.255.254: query refused (public or unregistered resolver)"
    }
    assert any(
        r.message == "dnsbl zone error" and getattr(r, "zone", "") == "dnsbl.test" for r in caplog.records
    )


def test_zone_listing_everything_is_skipped_after_health_check(
    dns_server: DnsServer, caplog: pytest.LogCaptureFixture
) -> None:
    flt = make_filter(dns_server.nameserver, ["broken-dnsbl.test", "dnsbl.test"])
    with caplog.at_level(logging.WARNING, logger="postroom.filters.dnsbl"):
        clean = check(flt, "127.0.0.5")
        listed = check(flt, "127.0.0.66")
    assert clean.outcome is Outcome.PASS
    assert clean.detail == (
        "127.0.0.5 not listed in dnsbl.test; "
        "skipped broken-dnsbl.test: lists 127.0.0.1, so it answers for any address"
    )
    assert listed.outcome is Outcome.FAIL and [e["zone"] for e in listed.data["listed"]] == ["dnsbl.test"]
    skipped = [r for r in caplog.records if r.message == "dnsbl zone skipped"]
    assert len(skipped) == 1 and getattr(skipped[0], "zone", "") == "broken-dnsbl.test"


def test_health_check_reports_a_zone_without_the_test_entry(dns_server: DnsServer) -> None:
    flt = make_filter(dns_server.nameserver, ["dnsbl.test", "spf.test"])
    assert run(flt.health_check()) == {"spf.test": "does not list the test entry 127.0.0.2"}


def test_health_check_repeats_every_interval_in_the_background(counting_dns_proxy: CountingDnsProxy) -> None:
    clock = FakeClock()
    flt = make_filter(counting_dns_proxy.nameserver, ["dnsbl.test"], clock, health_check_interval=120)
    test_entry = "2.0.0.127.dnsbl.test"

    async def scenario() -> None:
        conn = Connection("s1", "127.0.0.5")
        await flt.check(Stage.CONNECT, conn, None)
        clock.now += 119
        await flt.check(Stage.CONNECT, conn, None)
        assert counting_dns_proxy.count(test_entry, "A") == 1
        clock.now += 1
        await flt.check(Stage.CONNECT, conn, None)
        for _ in range(200):  # the refresh runs after the check has answered
            if counting_dns_proxy.count(test_entry, "A") == 2:
                break
            await asyncio.sleep(0.01)

    run(scenario())
    assert counting_dns_proxy.count(test_entry, "A") == 2


def test_dns_timeout_is_a_temperror(unresponsive_dns: UnresponsiveDnsServer) -> None:
    flt = make_filter(unresponsive_dns.nameserver, ["dnsbl.test"], dns_timeout=0.3)
    result = check(flt, "127.0.0.66")
    assert result.outcome is Outcome.TEMPERROR and result.reason == "dnsbl.temperror"
    assert "dnsbl.test: LifetimeTimeout" in result.detail


def test_servfail_is_a_temperror(dns_server: DnsServer) -> None:
    result = check(make_filter(dns_server.nameserver, ["servfail.test"]), "127.0.0.66")
    assert result.outcome is Outcome.TEMPERROR and result.reason == "dnsbl.temperror"
    assert "servfail.test: NoNameservers" in result.detail


def test_answers_are_cached_for_their_ttl(counting_dns_proxy: CountingDnsProxy) -> None:
    clock = FakeClock()
    flt = make_filter(counting_dns_proxy.nameserver, ["dnsbl.test"], clock)
    listed_name, clean_name = "66.0.0.127.dnsbl.test", "5.0.0.127.dnsbl.test"
    for _ in range(3):
        assert check(flt, "127.0.0.66").outcome is Outcome.FAIL
        assert check(flt, "127.0.0.5").outcome is Outcome.PASS
    assert counting_dns_proxy.count(listed_name, "A") == 1
    assert counting_dns_proxy.count(listed_name, "TXT") == 1
    assert counting_dns_proxy.count(clean_name, "A") == 1
    clock.now += 61  # past the zone's negative TTL (SOA minimum 60), within the listing's TTL (300)
    check(flt, "127.0.0.66")
    check(flt, "127.0.0.5")
    assert counting_dns_proxy.count(listed_name, "A") == 1
    assert counting_dns_proxy.count(clean_name, "A") == 2
    clock.now += 300
    check(flt, "127.0.0.66")
    assert counting_dns_proxy.count(listed_name, "A") == 2


def test_cache_is_bounded(dns_server: DnsServer) -> None:
    flt = make_filter(dns_server.nameserver, ["dnsbl.test"], cache_size=3)
    for last_octet in range(20, 30):
        check(flt, f"127.0.0.{last_octet}")
    assert len(flt.cache) == 3


def run_chain(flt: DnsblFilter, ip: str) -> tuple[Decision | None, Connection]:
    conn = Connection("s1", ip)
    return run(FilterChain([ChainLink(flt, flt.cfg)]).run(Stage.CONNECT, conn, None)), conn


def test_chain_refuses_a_listed_client_with_554_naming_the_zone(dns_server: DnsServer) -> None:
    decision, conn = run_chain(make_filter(dns_server.nameserver, ["dnsbl.test"]), "127.0.0.66")
    assert decision is not None
    assert decision.render().startswith(
        "554 5.7.1 service unavailable; client host blocked: 127.0.0.66 listed by dnsbl.test (127.0.0.2: "
    )
    assert conn.verdicts[0].action == "reject"


def test_chain_tempfails_on_dns_timeout_unless_fail_open(unresponsive_dns: UnresponsiveDnsServer) -> None:
    decision, _ = run_chain(
        make_filter(unresponsive_dns.nameserver, ["dnsbl.test"], dns_timeout=0.3), "127.0.0.66"
    )
    assert decision is not None and decision.render().startswith("451 4.7.1 ")
    flt = make_filter(unresponsive_dns.nameserver, ["dnsbl.test"], dns_timeout=0.3, fail_open=True)
    decision, conn = run_chain(flt, "127.0.0.66")
    assert decision is None and conn.verdicts[0].failed_open


def test_observe_mode_records_the_listing_without_refusing(dns_server: DnsServer) -> None:
    decision, conn = run_chain(
        make_filter(dns_server.nameserver, ["dnsbl.test"], mode=Mode.OBSERVE), "127.0.0.66"
    )
    assert decision is None
    assert conn.verdicts[0].action == "observe:reject" and conn.verdicts[0].reason == "dnsbl.listed"
