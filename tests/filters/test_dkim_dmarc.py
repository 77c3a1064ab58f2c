from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import dkim
import pytest

from filters.base import Connection, Mode, Outcome, Result, Stage, Transaction
from filters.chain import ChainLink, Decision, FilterChain
from filters.config import DkimDmarcConfig, SpfConfig
from filters.deps import FilterDeps
from filters.dkim_dmarc import (
    DkimDmarcFilter,
    aligned,
    author_domain,
    build,
    has_dkim_signature,
    organizational_domain,
    parse_dmarc_record,
)
from filters.resolver import make_resolver
from filters.spf import build as build_spf
from tests.servers.dns import REPO, DnsServer

pytestmark = pytest.mark.integration
T = TypeVar("T")
PRIVATE_KEY = (REPO / "fixtures" / "dkim" / "sel1.private.pem").read_bytes()
OTHER_SPF = {"result": "pass", "domain": "pass.spf.test", "identity": "mailfrom"}


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def message(author: str, subject: str = "Printer on fire", body: str = "Please help.\r\n") -> bytes:
    return (
        f"From: Alice <{author}>\r\nTo: help@acme.helpdesk.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <1@{author.partition('@')[2]}>\r\n\r\n{body}"
    ).encode()


def sign(msg: bytes, domain: str, selector: str = "sel1") -> bytes:
    signature: bytes = dkim.sign(
        msg, selector.encode(), domain.encode(), PRIVATE_KEY, include_headers=[b"from", b"to", b"subject"]
    )
    return signature + msg


def deps(dns_server: DnsServer) -> FilterDeps:
    return FilterDeps(resolver=make_resolver(dns_server.dns_config()), hostname="mx.postroom.test")


def make_filter(dns_server: DnsServer, **cfg: Any) -> DkimDmarcFilter:
    flt = build(DkimDmarcConfig(enabled=True, **cfg), deps(dns_server))
    assert isinstance(flt, DkimDmarcFilter)
    return flt


def check(flt: DkimDmarcFilter, msg: bytes, spf: dict[str, str] | None = None) -> tuple[Result, Transaction]:
    txn = Transaction("Q1", mail_from="bounce@pass.spf.test", message=msg)
    if spf is not None:
        txn.facts["spf"] = dict(spf)
    return run(flt.check(Stage.DATA, Connection("s1", "127.0.0.1"), txn)), txn


def test_dmarc_record_parsing_and_organisational_domain() -> None:
    record = parse_dmarc_record("example.test", "v=DMARC1; p=Reject; sp=none; adkim=s; pct=25")
    assert record is not None
    assert (record.p, record.sp, record.adkim, record.aspf, record.pct) == ("reject", "none", "s", "r", 25)
    assert parse_dmarc_record("example.test", "v=DMARC1; p=bogus") is None
    fallback = parse_dmarc_record("example.test", "v=DMARC1; p=bogus; rua=mailto:d@example.test")
    assert fallback is not None and fallback.p == "none"
    assert organizational_domain("a.b.news.reject.test.") == "reject.test"


@pytest.mark.parametrize(
    ("domain", "organisational"),
    [
        ("example.co.uk", "example.co.uk"),
        ("mail.Example.CO.UK.", "example.co.uk"),
        ("a.b.example.com.au", "example.com.au"),
        ("example.com", "example.com"),
        ("news.example.com", "example.com"),
        ("mail.example.unknowntld", "example.unknowntld"),  # not in the list: a one-label suffix
        ("co.uk", "co.uk"),  # a public suffix is its own
    ],
)
def test_the_organisational_domain_follows_the_public_suffix_list(domain: str, organisational: str) -> None:
    assert organizational_domain(domain) == organisational


def test_relaxed_alignment_never_joins_two_registrations_under_one_public_suffix() -> None:
    assert aligned("mail.example.co.uk", "example.co.uk", "r")
    assert not aligned("attacker.co.uk", "example.co.uk", "r")
    assert not aligned("attacker.com.au", "bank.com.au", "r")


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"From: a@b.test\r\nDKIM-Signature: v=1; d=b.test\r\n\r\nbody\r\n", True),
        (b"dkim-signature :\r\n\tv=1\r\nFrom: a@b.test\r\n\r\nbody\r\n", True),
        (b"From: a@b.test\nDKIM-Signature: v=1\n\nbody\n", True),  # bare LF
        (b"From: a@b.test\r\nDKIM-Signature: v=1\r\n", True),  # no body at all
        (b"From: a@b.test\r\nX-DKIM-Signature: v=1\r\n\r\nbody\r\n", False),
        (b"From: a@b.test\r\n\r\nDKIM-Signature: v=1 in the body\r\n", False),
        (b"From: a@b.test\r\nSubject: about DKIM-Signature: headers\r\n\r\n", False),
    ],
)
def test_has_dkim_signature_looks_at_header_fields_only(message: bytes, expected: bool) -> None:
    assert has_dkim_signature(message) is expected


def test_author_domain_needs_exactly_one_from_domain() -> None:
    assert author_domain(message("alice@Reject.Test")) == "reject.test"
    two = b"From: a@reject.test, b@monitor.test\r\nSubject: x\r\n\r\nbody\r\n"
    assert author_domain(two) == ""


def test_dkim_pass_aligns_dmarc(dns_server: DnsServer) -> None:
    result, txn = check(make_filter(dns_server), sign(message("alice@reject.test"), "reject.test"), OTHER_SPF)
    assert result.outcome is Outcome.PASS and result.reason == ""
    assert result.data["dkim"] == [
        {"result": "pass", "domain": "reject.test", "selector": "sel1", "detail": "good signature"}
    ]
    assert result.data["dmarc"] == {
        "result": "pass",
        "policy": "reject",
        "domain": "reject.test",
        "detail": "reject.test: aligned dkim pass",
    }
    assert txn.add_headers == [
        (
            "Authentication-Results",
            "mx.postroom.test; spf=pass smtp.mailfrom=pass.spf.test; "
            "dkim=pass (good signature) header.d=reject.test header.s=sel1; "
            "dmarc=pass (p=reject) header.from=reject.test",
        )
    ]


def test_tampered_body_fails_dkim_and_dmarc_reject_refuses(dns_server: DnsServer) -> None:
    signed = sign(message("alice@reject.test"), "reject.test")
    result, _ = check(make_filter(dns_server), signed.replace(b"Please help.", b"Please pay."), OTHER_SPF)
    assert result.data["dkim"][0]["result"] == "fail"
    assert result.data["dkim"][0]["detail"] == "body hash mismatch"
    assert (result.outcome, result.reason) == (Outcome.FAIL, "dmarc.reject")
    assert result.data["dmarc"]["result"] == "fail" and result.data["dmarc"]["policy"] == "reject"


def test_tampered_signed_header_fails_dkim(dns_server: DnsServer) -> None:
    signed = sign(message("alice@monitor.test"), "monitor.test")
    result, _ = check(make_filter(dns_server), signed.replace(b"Printer on fire", b"Invoice attached"))
    assert result.data["dkim"][0]["result"] == "fail"
    assert result.data["dkim"][0]["detail"] == "signature did not verify"


def test_missing_key_is_a_permerror(dns_server: DnsServer) -> None:
    result, txn = check(make_filter(dns_server), sign(message("alice@monitor.test"), "monitor.test", "nokey"))
    assert result.data["dkim"][0]["result"] == "permerror"
    assert result.data["dkim"][0]["detail"] == "no key at nokey._domainkey.monitor.test"
    assert "dkim=permerror (no key at nokey._domainkey.monitor.test)" in txn.add_headers[0][1]


def test_every_signature_is_verified(dns_server: DnsServer) -> None:
    twice = sign(sign(message("alice@reject.test"), "reject.test"), "monitor.test", "nokey")
    result, _ = check(make_filter(dns_server), twice)
    assert [(s["domain"], s["result"]) for s in result.data["dkim"]] == [
        ("monitor.test", "permerror"),
        ("reject.test", "pass"),
    ]
    assert result.data["dmarc"]["result"] == "pass"


def test_aligned_key_lookup_failure_under_p_reject_is_a_temperror(dns_server: DnsServer) -> None:
    result, _ = check(
        make_filter(dns_server), sign(message("alice@reject.test"), "reject.test", "broken"), OTHER_SPF
    )
    assert result.data["dkim"][0]["result"] == "temperror"
    assert (result.outcome, result.reason) == (Outcome.TEMPERROR, "dmarc.temperror")


def test_policy_lookup_failure_is_a_temperror(dns_server: DnsServer) -> None:
    result, _ = check(make_filter(dns_server), message("alice@servfail.test"), OTHER_SPF)
    assert (result.outcome, result.reason) == (Outcome.TEMPERROR, "dmarc.temperror")
    assert result.data["dmarc"]["detail"] == "DMARC policy lookup for servfail.test failed"


@pytest.mark.parametrize(("domain", "policy"), [("quarantine.test", "quarantine"), ("monitor.test", "none")])
def test_quarantine_and_none_failures_are_recorded(dns_server: DnsServer, domain: str, policy: str) -> None:
    result, _ = check(make_filter(dns_server), message(f"alice@{domain}"), OTHER_SPF)
    assert (result.outcome, result.reason) == (Outcome.PASS, "dmarc.fail")
    assert result.data["dmarc"]["policy"] == policy


def test_subdomain_uses_the_organisational_policy(dns_server: DnsServer) -> None:
    result, _ = check(make_filter(dns_server), message("alice@news.reject.test"), OTHER_SPF)
    assert (result.outcome, result.reason) == (Outcome.FAIL, "dmarc.reject")
    assert result.data["dmarc"]["domain"] == "news.reject.test"


def test_relaxed_spf_alignment_passes_and_strict_does_not(dns_server: DnsServer) -> None:
    flt = make_filter(dns_server)
    relaxed, _ = check(flt, message("alice@reject.test"), {**OTHER_SPF, "domain": "bounce.reject.test"})
    assert relaxed.data["dmarc"]["result"] == "pass" and relaxed.data["dmarc"]["detail"].endswith(
        "aligned spf pass"
    )
    strict, _ = check(flt, message("alice@strict.test"), {**OTHER_SPF, "domain": "bounce.strict.test"})
    assert (strict.outcome, strict.reason) == (Outcome.FAIL, "dmarc.reject")
    exact, _ = check(flt, message("alice@strict.test"), {**OTHER_SPF, "domain": "strict.test"})
    assert exact.data["dmarc"]["result"] == "pass"


def test_no_policy_and_no_signature_are_none(dns_server: DnsServer) -> None:
    result, txn = check(make_filter(dns_server), message("alice@with-mx.sender.test"))
    assert (result.outcome, result.reason) == (Outcome.PASS, "")
    assert result.data["dmarc"]["result"] == "none" and result.data["dkim"] == []
    assert txn.add_headers[0][1] == "mx.postroom.test; dkim=none; dmarc=none header.from=with-mx.sender.test"


def test_reject_is_only_recorded_when_not_enforced(dns_server: DnsServer) -> None:
    result, _ = check(
        make_filter(dns_server, enforce_dmarc_reject=False), message("alice@reject.test"), OTHER_SPF
    )
    assert (result.outcome, result.reason) == (Outcome.PASS, "dmarc.reject")


def run_session(
    dns_server: DnsServer, sender: str, msg: bytes, **cfg: Any
) -> tuple[Decision | None, Transaction]:
    """MAIL with the real SPF filter, then DATA with the auth filter, as the listener runs them."""
    spf_cfg, dkim_cfg = SpfConfig(enabled=True), DkimDmarcConfig(**cfg)
    chain = FilterChain(
        [
            ChainLink(build_spf(spf_cfg, deps(dns_server)), spf_cfg),
            ChainLink(build(dkim_cfg, deps(dns_server)), dkim_cfg),
        ]
    )
    conn = Connection("s1", "127.0.0.1", helo="mail.hosts.test")
    txn = Transaction("Q1", mail_from=sender, message=msg)

    async def session() -> Decision | None:
        return await chain.run(Stage.MAIL, conn, txn) or await chain.run(Stage.DATA, conn, txn)

    return run(session()), txn


def test_chain_accepts_with_spf_alignment_and_records_auth_facts(dns_server: DnsServer) -> None:
    decision, txn = run_session(dns_server, "bounce@bounce.reject.test", message("alice@reject.test"))
    assert decision is None
    assert txn.facts["auth"]["dmarc"]["result"] == "pass"
    assert txn.facts["auth"]["spf"]["domain"] == "bounce.reject.test"
    assert [name for name, _ in txn.add_headers] == ["Received-SPF", "Authentication-Results"]
    assert [(v.filter, v.action) for v in txn.verdicts] == [("spf", "accept"), ("auth", "accept")]


def test_chain_refuses_dmarc_reject_with_550(dns_server: DnsServer) -> None:
    decision, txn = run_session(dns_server, "a@pass.spf.test", message("alice@reject.test"))
    assert decision is not None
    assert decision.render() == "550 5.7.1 rejected by DMARC policy: reject.test: no aligned SPF or DKIM pass"
    assert txn.facts["auth"]["dmarc"]["policy"] == "reject"


def test_chain_observe_mode_records_without_refusing(dns_server: DnsServer) -> None:
    decision, txn = run_session(
        dns_server, "a@pass.spf.test", message("alice@reject.test"), mode=Mode.OBSERVE
    )
    assert decision is None and txn.verdicts[-1].action == "observe:reject"


def test_chain_tempfails_when_the_policy_cannot_be_fetched(dns_server: DnsServer) -> None:
    decision, _ = run_session(dns_server, "a@pass.spf.test", message("alice@servfail.test"))
    assert decision is not None
    assert decision.render() == (
        "451 4.7.1 temporary failure in message checks, try again later: "
        "DMARC policy lookup for servfail.test failed"
    )
