from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import spf

from filters.base import Connection, Outcome, Result, Stage, Transaction
from filters.chain import ChainLink, Decision, FilterChain
from filters.config import SpfConfig
from filters.deps import FilterDeps
from filters.resolver import make_resolver
from filters.spf import SpfFilter, build
from postroom.app.config import load_config
from postroom.core.config import DnsConfig
from postroom.core.configload import ConfigError
from tests.servers.dns import CountingDnsProxy, DnsServer, UnresponsiveDnsServer

pytestmark = pytest.mark.integration
T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def make_filter(nameserver: str, *, clock: Callable[[], float] = time.monotonic, **cfg: Any) -> SpfFilter:
    deps = FilterDeps(
        resolver=make_resolver(DnsConfig([nameserver], 2.0)), hostname="mx.postroom.test", monotonic=clock
    )
    flt = build(SpfConfig(enabled=True, **cfg), deps)
    assert isinstance(flt, SpfFilter)
    return flt


def check(
    flt: SpfFilter, sender: str, ip: str = "127.0.0.1", helo: str = "mail.hosts.test"
) -> tuple[Result, Transaction]:
    txn = Transaction("Q1", mail_from=sender)
    return run(flt.check(Stage.MAIL, Connection("s1", ip, helo=helo), txn)), txn


@pytest.mark.parametrize(
    ("sender", "outcome", "reason", "header"),
    [
        (
            "a@pass.spf.test",
            Outcome.PASS,
            "spf.pass",
            "Pass (mx.postroom.test: domain of pass.spf.test designates",
        ),
        (
            "a@fail.spf.test",
            Outcome.FAIL,
            "spf.fail",
            "Fail (mx.postroom.test: domain of fail.spf.test does not",
        ),
        (
            "a@softfail.spf.test",
            Outcome.PASS,
            "spf.softfail",
            "SoftFail (mx.postroom.test: transitioning domain",
        ),
        (
            "a@neutral.spf.test",
            Outcome.PASS,
            "spf.neutral",
            "Neutral (mx.postroom.test: 127.0.0.1 is neither",
        ),
        ("a@none.spf.test", Outcome.PASS, "spf.none", "None (mx.postroom.test: 127.0.0.1 is neither"),
        (
            "a@permerror.spf.test",
            Outcome.PASS,
            "spf.permerror",
            "PermError (mx.postroom.test: permanent error",
        ),
        ("a@syntax.spf.test", Outcome.PASS, "spf.permerror", "PermError (mx.postroom.test: permanent error"),
        (
            "a@temperror.spf.test",
            Outcome.TEMPERROR,
            "spf.temperror",
            "TempError (mx.postroom.test: temporary",
        ),
    ],
)
def test_each_spf_result_has_its_outcome_reason_and_header(
    dns_server: DnsServer, sender: str, outcome: Outcome, reason: str, header: str
) -> None:
    result, txn = check(make_filter(dns_server.nameserver), sender)
    assert (result.outcome, result.reason) == (outcome, reason)
    assert result.data["domain"] == sender.partition("@")[2]
    assert result.data["result"] == reason.removeprefix("spf.")
    assert result.data["identity"] == "mailfrom"
    [(name, value)] = txn.add_headers
    assert name == "Received-SPF" and value.startswith(header)
    assert "client-ip=127.0.0.1;" in value and 'envelope-from="' + sender + '"' in value


def test_two_spf_records_and_unknown_mechanisms_are_named(dns_server: DnsServer) -> None:
    flt = make_filter(dns_server.nameserver)
    assert "Two or more type TXT spf records found" in check(flt, "a@permerror.spf.test")[0].detail
    assert 'problem="frobnicate:x"' in check(flt, "a@syntax.spf.test")[1].add_headers[0][1]


def test_ipv6_client_is_matched_by_ip6_mechanism(dns_server: DnsServer) -> None:
    flt = make_filter(dns_server.nameserver)
    assert check(flt, "a@pass.spf.test", ip="2001:db8::5")[0].reason == "spf.pass"
    assert check(flt, "a@pass.spf.test", ip="2001:db9::5")[0].reason == "spf.fail"


def test_null_sender_checks_the_helo_identity(dns_server: DnsServer) -> None:
    flt = make_filter(dns_server.nameserver)
    passed, txn = check(flt, "", helo="helo-pass.spf.test")
    assert passed.reason == "spf.pass"
    assert passed.data["identity"] == "helo" and passed.data["domain"] == "helo-pass.spf.test"
    assert txn.add_headers[0][1].endswith("identity=helo") and "envelope-from" not in txn.add_headers[0][1]
    failed, _ = check(flt, "", helo="helo-fail.spf.test")
    assert failed.outcome is Outcome.FAIL and failed.data["domain"] == "helo-fail.spf.test"


def test_null_sender_with_address_literal_helo_is_skipped(dns_server: DnsServer) -> None:
    result, txn = check(make_filter(dns_server.nameserver), "", helo="[127.0.0.1]")
    assert result.outcome is Outcome.SKIP and txn.add_headers == []


def test_unresponsive_dns_is_a_bounded_temperror(unresponsive_dns: UnresponsiveDnsServer) -> None:
    flt = make_filter(unresponsive_dns.nameserver, timeout=1.0)
    result, txn = check(flt, "a@pass.spf.test")
    assert (result.outcome, result.reason) == (Outcome.TEMPERROR, "spf.temperror")
    assert txn.add_headers[0][1].startswith("TempError")


def test_softfail_and_permerror_are_refused_only_when_configured(dns_server: DnsServer) -> None:
    flt = make_filter(dns_server.nameserver, reject_softfail=True, reject_permerror=True)
    assert check(flt, "a@softfail.spf.test")[0].outcome is Outcome.FAIL
    assert check(flt, "a@syntax.spf.test")[0].outcome is Outcome.FAIL


def test_pyspf_used_elsewhere_keeps_its_own_behaviour(dns_server: DnsServer) -> None:
    check(make_filter(dns_server.nameserver), "a@pass.spf.test")
    query = spf.query(i="192.0.2.1", s="a@example.org", h="mx.example.org")
    assert query.check(spf="v=spf1 ip4:192.0.2.0/24 -all")[0] == "pass"


def run_chain(
    flt: SpfFilter, sender: str, helo: str = "mail.hosts.test"
) -> tuple[Decision | None, Transaction]:
    txn = Transaction("Q1", mail_from=sender)
    decision = run(
        FilterChain([ChainLink(flt, flt.cfg)]).run(Stage.MAIL, Connection("s1", "127.0.0.1", helo=helo), txn)
    )
    return decision, txn


@pytest.mark.parametrize(
    ("sender", "cfg", "reply"),
    [
        (
            "a@fail.spf.test",
            {},
            "550 5.7.23 SPF validation failed: "
            "domain of fail.spf.test does not designate 127.0.0.1 as permitted sender",
        ),
        (
            "a@temperror.spf.test",
            {},
            "451 4.7.24 SPF temporary error, try again later: "
            "temporary error in processing during lookup of temperror.spf.test",
        ),
        ("a@softfail.spf.test", {"reject_softfail": True}, "550 5.7.23 SPF validation failed (softfail): "),
        (
            "a@permerror.spf.test",
            {"reject_permerror": True},
            "550 5.7.24 SPF record invalid: permanent error",
        ),
    ],
)
def test_chain_replies(dns_server: DnsServer, sender: str, cfg: dict[str, Any], reply: str) -> None:
    decision, txn = run_chain(make_filter(dns_server.nameserver, **cfg), sender)
    assert decision is not None and decision.render().startswith(reply)
    assert txn.facts["spf"]["domain"] == sender.partition("@")[2]


def test_chain_accepts_and_records_pass_softfail_and_permerror(dns_server: DnsServer) -> None:
    flt = make_filter(dns_server.nameserver)
    for sender, result in [("a@pass.spf.test", "pass"), ("a@softfail.spf.test", "softfail")]:
        decision, txn = run_chain(flt, sender)
        assert decision is None
        assert txn.facts["spf"]["result"] == result
        assert txn.verdicts[0].action == "accept" and txn.verdicts[0].reason == f"spf.{result}"
    decision, txn = run_chain(flt, "", helo="helo-fail.spf.test")
    assert decision is not None and decision.render().startswith(
        "550 5.7.23 SPF validation failed: domain of helo"
    )


def count_evaluations(flt: SpfFilter, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Spy on pyspf runs: each entry is the sender one evaluation was made for."""
    runs: list[str] = []
    evaluate = flt._evaluate

    def spy(query: spf.query) -> Any:
        runs.append(query.s)
        return evaluate(query)

    monkeypatch.setattr(flt, "_evaluate", spy)
    return runs


@pytest.mark.parametrize("domain", ["pass", "fail", "softfail", "neutral", "none", "permerror", "syntax"])
def test_a_cached_result_gives_the_same_verdict_and_a_header_for_this_sender(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch, domain: str
) -> None:
    flt = make_filter(dns_server.nameserver)
    runs = count_evaluations(flt, monkeypatch)
    first, first_txn = check(flt, f"ada@{domain}.spf.test")
    second, second_txn = check(flt, f"bob@{domain}.spf.test")
    assert runs == [f"ada@{domain}.spf.test"]
    assert (second.outcome, second.reason, second.detail, second.data) == (
        first.outcome,
        first.reason,
        first.detail,
        first.data,
    )
    expected = first_txn.add_headers[0][1].replace(f'"ada@{domain}.spf.test"', f'"bob@{domain}.spf.test"')
    assert second_txn.add_headers == [("Received-SPF", expected)]


def test_a_cache_hit_asks_no_dns_and_other_clients_are_evaluated_afresh(
    counting_dns_proxy: CountingDnsProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    flt = make_filter(counting_dns_proxy.nameserver)
    runs = count_evaluations(flt, monkeypatch)
    check(flt, "a@pass.spf.test")
    asked = counting_dns_proxy.count("pass.spf.test", "TXT")
    check(flt, "b@PASS.spf.test")
    assert counting_dns_proxy.count("pass.spf.test", "TXT") == asked and len(runs) == 1
    assert check(flt, "a@pass.spf.test", ip="127.0.0.9")[0].reason == "spf.pass"
    assert check(flt, "a@pass.spf.test", ip="2001:db9::5")[0].reason == "spf.fail"
    assert check(flt, "", helo="pass.spf.test")[0].data["identity"] == "helo"
    assert len(runs) == 4


def test_a_record_with_macros_is_evaluated_for_every_sender(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    flt = make_filter(dns_server.nameserver)
    runs = count_evaluations(flt, monkeypatch)
    assert check(flt, "alice@macro.spf.test")[0].reason == "spf.pass"
    assert check(flt, "bob@macro.spf.test")[0].reason == "spf.fail"
    assert check(flt, "alice@macro.spf.test")[0].reason == "spf.pass"
    assert len(runs) == 3


def test_temperror_is_not_cached(dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    flt = make_filter(dns_server.nameserver)
    runs = count_evaluations(flt, monkeypatch)
    assert check(flt, "a@temperror.spf.test")[0].reason == "spf.temperror"
    assert check(flt, "a@temperror.spf.test")[0].reason == "spf.temperror"
    assert len(runs) == 2


def test_a_cached_result_expires_after_cache_ttl(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    flt = make_filter(dns_server.nameserver, clock=lambda: now[0], cache_ttl=30)
    runs = count_evaluations(flt, monkeypatch)
    check(flt, "a@pass.spf.test")
    now[0] += 29
    check(flt, "a@pass.spf.test")
    now[0] += 2
    check(flt, "a@pass.spf.test")
    assert len(runs) == 2


def test_cache_size_zero_evaluates_every_check(
    dns_server: DnsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    flt = make_filter(dns_server.nameserver, cache_size=0)
    runs = count_evaluations(flt, monkeypatch)
    check(flt, "a@pass.spf.test")
    check(flt, "a@pass.spf.test")
    assert len(runs) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("cache_ttl = 0", "cache_ttl: must be positive"),
        ("cache_size = -1", "cache_size: must not be negative"),
    ],
)
def test_bad_cache_settings_are_config_errors(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "postroom.toml"
    path.write_text(f"[filters.spf]\nenabled = true\n{line}\n")
    with pytest.raises(ConfigError, match=rf"^filters\.spf\.{message}"):
        load_config(path)
