from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from filters.base import Connection, Outcome, Result, Stage, Transaction
from filters.chain import ChainLink, FilterChain
from filters.config import FqdnConfig
from filters.deps import FilterDeps
from filters.fqdn import FqdnFilter, build, helo_problem
from filters.resolver import make_resolver
from postroom.core.config import DnsConfig
from tests.servers.dns import CountingDnsProxy, DnsServer, UnresponsiveDnsServer

pytestmark = pytest.mark.integration
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def make_filter(nameserver: str, dns_timeout: float = 2.0, **cfg: Any) -> FqdnFilter:
    deps = FilterDeps(
        resolver=make_resolver(DnsConfig([nameserver], dns_timeout)), hostname="mx.postroom.test"
    )
    flt = build(FqdnConfig(enabled=True, **cfg), deps)
    assert isinstance(flt, FqdnFilter)
    return flt


def helo(flt: FqdnFilter, name: str, ip: str = "127.0.0.1") -> tuple[Result, Connection]:
    conn = Connection("s1", ip, helo=name)
    return run(flt.check(Stage.HELO, conn, None)), conn


def mail(flt: FqdnFilter, sender: str) -> Result:
    return run(
        flt.check(Stage.MAIL, Connection("s1", "127.0.0.1", helo="mail.hosts.test"), Transaction("Q", sender))
    )


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("mail.hosts.test", None),
        ("mail.hosts.test.", None),
        ("under_score.example.test", None),
        ("[127.0.0.1]", None),
        ("[IPv6:2001:db8::1]", None),
        ("localhost", "fqdn.helo_not_fqdn"),
        ("", "fqdn.helo_invalid"),
        ("127.0.0.1", "fqdn.helo_invalid"),
        ("2001:db8::1", "fqdn.helo_invalid"),
        ("[127.0.0]", "fqdn.helo_invalid"),
        ("[mail.hosts.test]", "fqdn.helo_invalid"),
        ("bad!name.test", "fqdn.helo_invalid"),
        ("-leading.test", "fqdn.helo_invalid"),
        ("double..dot.test", "fqdn.helo_invalid"),
        ("host.123", "fqdn.helo_invalid"),
        ("x" * 64 + ".test", "fqdn.helo_invalid"),
    ],
)
def test_helo_syntax(name: str, reason: str | None) -> None:
    problem = helo_problem(name)
    assert (problem[0] if problem else None) == reason


def test_bare_ip_helo_detail_suggests_the_address_literal() -> None:
    assert helo_problem("192.0.2.1") == (
        "fqdn.helo_invalid",
        "bare IP address 192.0.2.1 (an address literal needs brackets: [192.0.2.1])",
    )


@pytest.mark.parametrize(
    ("ip", "reverse_name", "detail"),
    [
        ("127.0.0.1", "mail.hosts.test", "reverse DNS mail.hosts.test (forward-confirmed)"),
        ("127.0.0.10", "fcrdns.hosts.test", "reverse DNS fcrdns.hosts.test (forward-confirmed)"),
        ("127.0.0.11", "", "reverse DNS liar.hosts.test does not resolve back to 127.0.0.11"),
        ("127.0.0.12", "", "reverse DNS ghost.hosts.test does not resolve back to 127.0.0.12"),
        ("127.0.0.13", "", "no reverse DNS for 127.0.0.13"),
    ],
)
def test_forward_confirmed_reverse_dns_is_recorded_not_refused(
    dns_server: DnsServer, ip: str, reverse_name: str, detail: str
) -> None:
    result, conn = helo(make_filter(dns_server.nameserver), "mail.hosts.test", ip)
    assert result.outcome is Outcome.PASS
    assert conn.reverse_name == reverse_name
    assert result.data["reverse_dns"] == detail and detail in result.detail


def test_reverse_dns_failure_is_recorded(unresponsive_dns: UnresponsiveDnsServer) -> None:
    result, conn = helo(make_filter(unresponsive_dns.nameserver, dns_timeout=0.2), "mail.hosts.test")
    assert result.outcome is Outcome.PASS and conn.reverse_name == ""
    assert result.data["reverse_dns"] == "reverse DNS lookup failed: LifetimeTimeout"


def test_bad_helo_is_recorded_only_when_its_switch_is_off(dns_server: DnsServer) -> None:
    flt = make_filter(dns_server.nameserver, reject_non_fqdn_helo=False, reject_invalid_helo=False)
    for name, reason in [("localhost", "fqdn.helo_not_fqdn"), ("127.0.0.1", "fqdn.helo_invalid")]:
        result, _ = helo(flt, name)
        assert (result.outcome, result.reason) == (Outcome.PASS, reason)


@pytest.mark.parametrize(
    ("sender", "outcome", "reason", "detail"),
    [
        ("a@with-mx.sender.test", Outcome.PASS, "", "with-mx.sender.test has MX records"),
        ("a@a-only.sender.test", Outcome.PASS, "", "a-only.sender.test has no MX but has an address record"),
        (
            "a@aaaa-only.sender.test",
            Outcome.PASS,
            "",
            "aaaa-only.sender.test has no MX but has an address record",
        ),
        ("a@[127.0.0.1]", Outcome.PASS, "", "sender domain [127.0.0.1] is an address literal"),
        (
            "a@null-mx.sender.test",
            Outcome.FAIL,
            "fqdn.sender_domain_unknown",
            "null-mx.sender.test has a null MX: it accepts no mail",
        ),
        (
            "a@txt-only.sender.test",
            Outcome.FAIL,
            "fqdn.sender_domain_unknown",
            "txt-only.sender.test has no MX, A or AAAA record",
        ),
        (
            "a@absent.sender.test",
            Outcome.FAIL,
            "fqdn.sender_domain_unknown",
            "absent.sender.test: domain does not exist",
        ),
        (
            "a@x.servfail.test",
            Outcome.TEMPERROR,
            "fqdn.sender_domain_temperror",
            "x.servfail.test: NoNameservers",
        ),
        (
            "a@localhost",
            Outcome.FAIL,
            "fqdn.sender_not_fqdn",
            "<a@localhost>: domain 'localhost' not fully qualified",
        ),
        ("postmaster", Outcome.FAIL, "fqdn.sender_not_fqdn", "<postmaster>: domain '' missing"),
        (
            "a@bad!domain.test",
            Outcome.FAIL,
            "fqdn.sender_not_fqdn",
            "<a@bad!domain.test>: domain 'bad!domain.test'",
        ),
    ],
)
def test_sender_domain(
    dns_server: DnsServer, sender: str, outcome: Outcome, reason: str, detail: str
) -> None:
    result = mail(make_filter(dns_server.nameserver), sender)
    assert (result.outcome, result.reason) == (outcome, reason)
    assert result.detail.startswith(detail)


def test_a_domain_with_mx_or_none_at_all_costs_one_query(counting_dns_proxy: CountingDnsProxy) -> None:
    flt = make_filter(counting_dns_proxy.nameserver)
    assert mail(flt, "a@pass.spf.test").outcome is Outcome.PASS
    assert mail(flt, "a@absent.sender.test").reason == "fqdn.sender_domain_unknown"
    assert counting_dns_proxy.total() == 2
    assert mail(flt, "a@a-only.sender.test").outcome is Outcome.PASS  # no MX: then A and AAAA
    assert counting_dns_proxy.count("a-only.sender.test", "AAAA") == 1


def test_null_sender_skips_sender_checks(dns_server: DnsServer) -> None:
    assert mail(make_filter(dns_server.nameserver), "").outcome is Outcome.SKIP


def test_sender_domain_dns_timeout_is_a_temperror(unresponsive_dns: UnresponsiveDnsServer) -> None:
    result = mail(make_filter(unresponsive_dns.nameserver, dns_timeout=0.2), "a@with-mx.sender.test")
    assert (result.outcome, result.reason) == (Outcome.TEMPERROR, "fqdn.sender_domain_temperror")


def test_unknown_sender_domain_is_recorded_when_its_switch_is_off(dns_server: DnsServer) -> None:
    flt = make_filter(dns_server.nameserver, reject_unknown_sender_domain=False, reject_non_fqdn_sender=False)
    assert mail(flt, "a@absent.sender.test").outcome is Outcome.PASS
    assert mail(flt, "a@localhost").outcome is Outcome.PASS


@pytest.mark.parametrize(
    ("stage", "value", "reply"),
    [
        (
            Stage.HELO,
            "localhost",
            "504 5.5.2 HELO hostname must be a fully-qualified domain name: localhost is not",
        ),
        (Stage.HELO, "127.0.0.1", "501 5.5.2 invalid HELO hostname: bare IP address 127.0.0.1"),
        (
            Stage.MAIL,
            "a@localhost",
            "504 5.5.2 sender address must contain a fully-qualified domain: <a@localhost>",
        ),
        (
            Stage.MAIL,
            "a@absent.sender.test",
            "550 5.1.8 sender address rejected: domain not found: absent.sender.test: domain does not exist",
        ),
        (
            Stage.MAIL,
            "a@x.servfail.test",
            "450 4.1.8 sender address rejected: domain lookup failed: x.servfail.test: NoNameservers",
        ),
    ],
)
def test_chain_replies(dns_server: DnsServer, stage: Stage, value: str, reply: str) -> None:
    flt = make_filter(dns_server.nameserver)
    chain = FilterChain([ChainLink(flt, flt.cfg)])
    if stage is Stage.HELO:
        decision = run(chain.run(stage, Connection("s1", "127.0.0.1", helo=value), None))
    else:
        conn = Connection("s1", "127.0.0.1", helo="mail.hosts.test")
        decision = run(chain.run(stage, conn, Transaction("Q", mail_from=value)))
    assert decision is not None and decision.render().startswith(reply)
