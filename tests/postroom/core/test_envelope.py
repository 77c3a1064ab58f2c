"""The spool envelope's codec: round trip, the previous release's format, and clear errors for the rest."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from postroom.core.envelope import (
    VERSION,
    AuthResults,
    EnvelopeError,
    SpamReport,
    SpoolEnvelope,
    VerdictRecord,
    VirusReport,
    facts_from_filters,
)

VERDICT = {
    "stage": "data",
    "filter": "rspamd",
    "result": "pass",
    "reason": "",
    "detail": "",
    "ms": 1.5,
    "mode": "enforce",
    "action": "accept",
    "failed_open": False,
}
SPF = {"result": "pass", "domain": "example.org", "identity": "mailfrom", "detail": "", "explanation": ""}
AUTH = {"spf": SPF, "dkim": [{"result": "pass", "domain": "example.org"}], "dmarc": {"result": "pass"}}
SPAM = {"score": 1.5, "required_score": 15.0, "action": "no action", "symbols": ["A", "B"]}
VIRUS = {"found": False, "name": None, "scanned": False}

# What the previous release wrote: no version, filter facts keyed by filter name.
LEGACY_META: dict[str, Any] = {
    "id": "0018F2A6B3C4D5E6A",
    "kind": "ticket",
    "tenant": "acme",
    "mailbox": "support",
    "mailbox_hash": "4711",
    "received_at": "2026-11-22T06:00:00.000000Z",
    "mail_from": "ada@example.org",
    "rcpt_to": ["support+4711@acme.helpdesk.test"],
    "client_ip": "192.0.2.7",
    "helo": "client.example.org",
    "tls": True,
    "session": "S1",
    "transaction": "0018F2A6B3C4D5E6A",
    "verdicts": [VERDICT],
    "facts": {"spf": SPF, "auth": AUTH, "rspamd": {"spam": SPAM}, "clamav": {"virus": VIRUS}},
    "queued_at": 1700000000.25,
}


def _envelope() -> SpoolEnvelope:
    return SpoolEnvelope(
        id="Q1",
        tenant="acme",
        mailbox="support",
        received_at="2026-11-22T06:00:00.000000Z",
        mail_from="",
        rcpt_to=("support@acme.helpdesk.test",),
        tls=True,
        auth=AuthResults(spf=SPF, dkim=({"result": "none"},), dmarc=None),
        spam=SpamReport(
            score=9.5, required_score=15, action="rewrite subject", symbols=("X",), subject="[SPAM]"
        ),
        virus=VirusReport(found=True, name="Eicar-Test-Signature"),
        verdicts=(VerdictRecord(**VERDICT),),
    )


def test_round_trip_through_the_stored_json_is_exact() -> None:
    envelope = _envelope()
    stored = orjson.loads(orjson.dumps(envelope.to_meta()))
    assert stored["v"] == VERSION
    assert SpoolEnvelope.from_meta(stored) == envelope


def test_an_envelope_of_the_previous_release_still_reads_with_typed_facts() -> None:
    envelope = SpoolEnvelope.from_meta(LEGACY_META)
    assert (envelope.tenant, envelope.mailbox_hash, envelope.rcpt_to) == (
        "acme",
        "4711",
        ("support+4711@acme.helpdesk.test",),
    )
    assert envelope.auth is not None and envelope.auth.as_dict() == AUTH
    assert envelope.spam == SpamReport(1.5, 15.0, "no action", ("A", "B"))
    assert envelope.virus == VirusReport(found=False, name=None, scanned=False)
    assert envelope.verdicts == (VerdictRecord(**VERDICT),)
    assert envelope.queued_at == 1700000000.25


def test_spf_alone_becomes_the_auth_results_when_dkim_dmarc_did_not_run() -> None:
    facts = facts_from_filters({"spf": SPF})
    assert facts.auth == AuthResults(spf=SPF)
    assert facts.auth.as_dict() == {"spf": SPF, "dkim": [], "dmarc": None}
    assert facts.spam is None and facts.virus is None


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({**LEGACY_META, "v": 3}, "unknown envelope version 3"),
        ({**LEGACY_META, "v": "2"}, "unknown envelope version '2'"),
        ({k: v for k, v in LEGACY_META.items() if k != "tenant"}, "no 'tenant'"),
        ({**LEGACY_META, "rcpt_to": "one@example.org"}, "'rcpt_to'"),
        ({**LEGACY_META, "verdicts": [{"stage": 1}]}, "'verdicts'"),
        ({**LEGACY_META, "facts": {"rspamd": {"spam": {"score": "high"}}}}, "'facts'"),
        ({**_envelope().to_meta(), "spam": {"score": 1, "action": 5}}, "'spam'"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_a_corrupt_or_unknown_envelope_is_a_clear_error(meta: Any, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        SpoolEnvelope.from_meta(meta)
