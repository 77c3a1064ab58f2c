"""Rspamd filter against a real Rspamd (fixtures/rspamd), through filters.chain and the policy table."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import dns.asyncresolver
import pytest

from filters.base import Connection, Mode, Stage, Transaction
from filters.chain import ChainLink, Decision, FilterChain
from filters.config import RspamdConfig
from filters.deps import FilterDeps
from filters.rspamd import RspamdFilter, RspamdReplyError, build, parse_scan
from postroom.core.configload import ConfigError
from tests.servers.daemon import free_port
from tests.servers.rspamd import (
    FORCE_ACTION_HEADER,
    GTUBE,
    GTUBE_ADD_HEADER,
    GTUBE_REWRITE_SUBJECT,
    RspamdServer,
)

pytestmark = pytest.mark.integration

RCPTS = ["help@acme.helpdesk.test", "billing@acme.helpdesk.test"]


def message(body: bytes = b"The printer on floor 2 jams again.", extra_headers: str = "") -> bytes:
    head = (
        "From: Alice <alice@example.org>\r\nTo: help@acme.helpdesk.test, billing@acme.helpdesk.test\r\n"
        "Subject: printer\r\nMessage-ID: <m1@example.org>\r\nDate: Sun, 22 Nov 2026 05:00:00 +0000\r\n"
        f"{extra_headers}\r\n"
    )
    return head.encode() + body + b"\r\n"


def make_filter(url: str, **overrides: Any) -> RspamdFilter:
    cfg = dataclasses.replace(RspamdConfig(enabled=True, url=url, timeout=5.0), **overrides)
    deps = FilterDeps(resolver=dns.asyncresolver.Resolver(configure=False), hostname="mx.postroom.test")
    return build(cfg, deps)


async def _check(flt: RspamdFilter, txn: Transaction) -> Decision | None:
    conn = Connection(session_id="s1", peer_ip="127.0.0.10", helo="mail.example.org", esmtp=True)
    try:
        return await FilterChain([ChainLink(flt, flt.cfg)]).run(Stage.DATA, conn, txn)
    finally:
        await flt.aclose()


def check(flt: RspamdFilter, raw: bytes) -> tuple[Decision | None, Transaction]:
    txn = Transaction(queue_id="Q7RSPAMD", mail_from="alice@example.org", rcpt_to=list(RCPTS))
    txn.message = raw
    return asyncio.run(_check(flt, txn)), txn


def test_gtube_is_rejected_with_score_and_symbols_recorded(rspamd_server: RspamdServer) -> None:
    decision, txn = check(make_filter(rspamd_server.url), message(GTUBE))
    assert decision is not None
    assert decision.render() == "554 5.7.1 message rejected as spam: reject, score 15.00 of 15.00"
    spam = txn.facts["rspamd"]["spam"]
    assert spam["action"] == "reject"
    assert spam["score"] >= spam["required_score"] > 0
    assert "GTUBE" in spam["symbols"]
    assert txn.add_headers == []


def test_normal_message_passes_with_envelope_seen_by_rspamd(rspamd_server: RspamdServer) -> None:
    decision, txn = check(make_filter(rspamd_server.url), message())
    assert decision is None
    spam = txn.facts["rspamd"]["spam"]
    assert spam["action"] == "no action"
    assert spam["symbols"] == sorted(spam["symbols"])
    # Symbols that Rspamd can only set from our request headers: both Rcpt headers and the From header.
    assert {"RCPT_COUNT_TWO", "TO_MATCH_ENVRCPT_ALL", "FROM_EQ_ENVFROM"} <= set(spam["symbols"])
    assert txn.add_headers == []


@pytest.mark.parametrize(
    ("body", "action"), [(GTUBE_ADD_HEADER, "add header"), (GTUBE_REWRITE_SUBJECT, "rewrite subject")]
)
def test_spam_marking_actions_accept_and_add_x_spam(
    rspamd_server: RspamdServer, body: bytes, action: str
) -> None:
    decision, txn = check(make_filter(rspamd_server.url), message(body))
    assert decision is None
    assert txn.facts["rspamd"]["spam"]["action"] == action
    assert txn.add_headers == [("X-Spam", "Yes")]


def test_rewrite_subject_records_rspamds_subject(rspamd_server: RspamdServer) -> None:
    _, txn = check(make_filter(rspamd_server.url), message(GTUBE_REWRITE_SUBJECT))
    assert txn.facts["rspamd"]["spam"]["subject"] == "*** SPAM *** printer"


def test_observe_mode_leaves_the_message_unchanged(rspamd_server: RspamdServer) -> None:
    decision, txn = check(make_filter(rspamd_server.url, mode=Mode.OBSERVE), message(GTUBE_ADD_HEADER))
    assert decision is None
    assert txn.add_headers == []
    assert txn.facts["rspamd"]["spam"]["action"] == "add header"


@pytest.mark.parametrize(
    ("action", "reply"),
    [
        ("greylist", "451 4.7.1 greylisted, try again later"),
        ("soft reject", "451 4.7.1 message deferred, try again later"),
    ],
)
def test_deferring_actions_give_451(rspamd_server: RspamdServer, action: str, reply: str) -> None:
    raw = message(extra_headers=f"{FORCE_ACTION_HEADER}: {action}\r\n")
    decision, txn = check(make_filter(rspamd_server.url), raw)
    assert decision is not None
    assert decision.render().startswith(reply + f": {action}, score ")
    assert txn.facts["rspamd"]["spam"]["action"] == action


def test_rspamd_down_gives_451(rspamd_killable: RspamdServer) -> None:
    flt = make_filter(rspamd_killable.url)
    rspamd_killable.kill()
    decision, txn = check(flt, message(GTUBE))
    assert decision is not None
    assert decision.render().startswith("451 4.7.1 temporary failure in message checks")
    assert txn.verdicts[0].reason == "rspamd.unavailable"


def test_rspamd_down_with_fail_open_accepts_and_flags(rspamd_killable: RspamdServer) -> None:
    flt = make_filter(rspamd_killable.url, fail_open=True)
    rspamd_killable.kill()
    decision, txn = check(flt, message())
    assert decision is None
    verdict = txn.verdicts[0]
    assert (verdict.result, verdict.failed_open) == ("temperror", True)
    assert "rspamd" not in txn.facts  # no score invented when nothing was scanned


def test_hung_rspamd_gives_451(rspamd_killable: RspamdServer) -> None:
    flt = make_filter(rspamd_killable.url, timeout=0.5)
    rspamd_killable.freeze()
    try:
        decision, txn = check(flt, message())
    finally:
        rspamd_killable.thaw()
    assert decision is not None and decision.reply.code == 451
    assert txn.verdicts[0].reason in {"rspamd.timeout", "rspamd.unavailable"}


def test_rspamd_killed_during_traffic_never_passes_spam(rspamd_killable: RspamdServer) -> None:
    flt = make_filter(rspamd_killable.url)
    chain = FilterChain([ChainLink(flt, flt.cfg)])

    async def traffic() -> list[Decision | None]:
        first_scanned = asyncio.Event()

        async def one(i: int) -> Decision | None:
            txn = Transaction(
                queue_id=f"Q{i}", mail_from="a@example.org", rcpt_to=RCPTS[:1], message=message(GTUBE)
            )
            decision = await chain.run(Stage.DATA, Connection(session_id=f"s{i}", peer_ip="127.0.0.10"), txn)
            if decision is not None and decision.reply.code == 554:
                first_scanned.set()
            return decision

        try:
            burst = [asyncio.create_task(one(i)) for i in range(40)]
            await asyncio.wait_for(first_scanned.wait(), timeout=10)
            await asyncio.to_thread(rspamd_killable.kill)
            after = [asyncio.create_task(one(100 + i)) for i in range(10)]
            return list(await asyncio.gather(*burst, *after))
        finally:
            await flt.aclose()

    codes = [d.reply.code if d else None for d in asyncio.run(traffic())]
    assert None not in codes  # every GTUBE message refused: scanned (554) or deferred (451)
    assert set(codes) == {554, 451}
    assert codes[-10:] == [451] * 10


def test_http_error_from_rspamd_is_a_temporary_failure(rspamd_server: RspamdServer) -> None:
    # A wrong path in the configured URL: Rspamd answers "500 invalid command".
    decision, txn = check(make_filter(rspamd_server.url + "/wrong"), message())
    assert decision is not None and decision.reply.code == 451
    assert txn.verdicts[0].reason == "rspamd.error"
    assert "HTTP 500" in txn.verdicts[0].detail


def test_nothing_listening_is_unavailable() -> None:
    decision, txn = check(make_filter(f"http://127.0.0.1:{free_port()}"), message())
    assert decision is not None and decision.reply.code == 451
    assert txn.verdicts[0].reason == "rspamd.unavailable"


@pytest.mark.parametrize("url", ["127.0.0.1:11333", "http://", "https://h:99999/x"])
def test_bad_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^filters\.rspamd\.url: "):
        make_filter(url)


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"action": "quarantine", "score": 1, "required_score": 15, "symbols": {}},
        {"action": "reject", "score": "high", "required_score": 15, "symbols": {}},
        {"action": "reject", "required_score": 15, "symbols": {}},
        {"action": "no action", "score": 0, "required_score": 15, "symbols": ["GTUBE"]},
    ],
)
def test_unusable_replies_are_refused_by_the_parser(body: Any) -> None:
    with pytest.raises(RspamdReplyError):
        parse_scan(body)
