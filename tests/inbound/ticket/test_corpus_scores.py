"""The regression corpus of real-world mail must never score worse than its floors.

The floors in fixtures/mail/corpus/floors.json only ever rise: when the normaliser gets better, raise them
to the new score (rounded down to a whole percent) in the same change; never lower one to make a test pass.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.inbound.ticket import corpus_score as cs

FLOORS: dict[str, Any] = json.loads((cs.CORPUS / "floors.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def report() -> cs.Report:
    return cs.score()


def test_every_message_gets_a_ticket(report: cs.Report) -> None:
    assert report.items > 300
    assert report.no_ticket == []


@pytest.mark.parametrize("category", [*cs.CATEGORIES, "total"])
def test_category_at_or_above_floor(report: cs.Report, category: str) -> None:
    totals = report.totals()[category]
    assert totals["total"] > 0, f"{category}: no checks in the corpus"
    assert totals["rate"] >= FLOORS[category], (
        f"{category}: {totals['rate']}% is below its floor {FLOORS[category]}% "
        f"(python -m tests.inbound.ticket.corpus_score --verbose --category {category})"
    )


SOURCE_FLOORS = [
    (source, category, floor)
    for source, floors in FLOORS.get("sources", {}).items()
    if not source.startswith("_")
    for category, floor in floors.items()
]


@pytest.mark.parametrize(("source", "category", "floor"), SOURCE_FLOORS)
def test_held_out_source_at_or_above_its_floor(source: str, category: str, floor: float) -> None:
    totals = cs.score(sources=frozenset({source})).totals()[category]
    assert totals["total"] > 0, f"{source}/{category}: no checks"
    assert totals["rate"] >= floor, (
        f"{source}/{category}: {totals['rate']}% is below its floor {floor}% "
        f"(python -m tests.inbound.ticket.corpus_score --verbose --source {source} --category {category})"
    )


def test_scoring_is_quick(report: cs.Report) -> None:
    assert report.seconds < 60


# ------------------------------------------------------------------------------- the comparison rules


def test_text_normalisation_ignores_trailing_space_and_outer_blank_lines() -> None:
    assert cs.normalise_text("Hello \r\n\r\nBob  \n\n\n") == "Hello\n\nBob"
    assert cs.normalise_text("\n\nHi") == "Hi"
    # Inner blank lines and leading indentation of inner lines still count.
    assert cs.normalise_text("a\n\n\nb") != cs.normalise_text("a\nb")
    assert cs.normalise_text("a\n  b") != cs.normalise_text("a\nb")


def test_addresses_compare_as_sets_case_insensitively() -> None:
    assert cs.same_addresses(["User@Example.COM", "b@x.org"], ["b@x.org", "user@example.com"])
    assert not cs.same_addresses(["a@x.org"], ["a@x.org", "b@x.org"])
    assert not cs.same_addresses(["a@x.org"], [])


def _checks(expect: dict[str, Any], ticket: dict[str, Any]) -> list[cs.Check]:
    item = cs.Item("unit", "case", b"", "", expect)
    return list(cs.check_item(item, ticket))


def test_reply_text_rules_can_fail() -> None:
    ticket = {"stripped_text_reply": "Thanks!\n\nOn Mon, Bob wrote:"}
    [equals] = _checks({"reply_text": {"equals": "Thanks!"}}, ticket)
    assert not equals.ok
    contains, lacks = _checks({"reply_text": {"contains": ["Thanks"], "not_contains": ["Bob wrote"]}}, ticket)
    assert contains.ok and not lacks.ok
    [nows] = _checks({"reply_text": {"equals_nows": "Thanks! On Mon, Bob wrote:"}}, ticket)
    assert nows.ok
    [absent] = _checks({"reply_text": {"equals": "x"}}, {})
    assert not absent.ok


def test_future_fields_count_as_failed_when_absent() -> None:
    expect = {
        "bounce": {
            "type": "failed",
            "recipients_detail": [{"email": "a@x.org", "status": "5.1.1", "kind": "permanent"}],
        },
        "stripped_html_reply": {"text_equals_nows": "Hi"},
    }
    checks = _checks(expect, {"bounce": {"is_bounce": True, "recipients": ["a@x.org"]}})
    assert [c.category for c in checks] == ["bounce_detail", "bounce_detail", "bounce_detail", "reply_text"]
    assert not any(c.ok for c in checks)
    present = {
        "bounce": {
            "type": "failed",
            "recipients_detail": [
                {"email": "A@x.org", "status": "5.1.1", "kind": "permanent", "reason": "user_unknown"}
            ],
        },
        "stripped_html_reply": "<div>Hi</div>",
    }
    assert all(c.ok for c in _checks(expect, present))


def test_bounce_and_header_checks() -> None:
    ticket = {
        "bounce": {"is_bounce": True, "recipients": ["a@x.org"]},
        "auto_submitted": True,
        "subject": "S",
        "from": {"name": None, "email": "F@x.org"},
        "to": [{"name": None, "email": "t@x.org"}],
    }
    expect = {
        "bounce": {"is_bounce": True, "recipients": ["A@X.org"]},
        "auto_submitted": False,
        "headers": {"subject": "S", "from_email": "f@x.org", "to": ["t@x.org", "u@x.org"]},
    }
    results = {c.name: c.ok for c in _checks(expect, ticket)}
    assert results == {
        "bounce.is_bounce": True,
        "bounce.recipients": True,
        "auto_submitted": False,
        "subject": True,
        "from_email": True,
        "to": False,
    }


def test_inline_cases_are_wrapped_byte_exact() -> None:
    body = "Reply with trailing space \n-- \nsig"
    ticket = cs.make_ticket(cs.wrap_case("unit/1", body, "text/plain"), mail_from="sender@example.net")
    assert ticket["text"] == body
    assert ticket["subject"] == "corpus case unit/1"


def test_mbox_from_line_is_dropped() -> None:
    assert cs.strip_mbox_from_line(b"From VM Wed Oct  4 02:03:34 2000\nSubject: x\n") == b"Subject: x\n"
    assert cs.strip_mbox_from_line(b"From: a@x.org\n") == b"From: a@x.org\n"


def test_to_names_and_not_contains_checks_can_fail() -> None:
    ticket: dict[str, Any] = {
        "to": [{"name": "Mirosław Marczak", "email": "m@example.com"}],
        "text": "Section one\n",
    }
    names = list(cs.header_checks({"to_names": ["Mirosław Marczak"]}, ticket, "x"))
    assert [c.ok for c in names] == [True]
    wrong = list(cs.header_checks({"to_names": ["Miroslaw Marczak"]}, ticket, "x"))
    assert [c.ok for c in wrong] == [False]
    lacks = list(cs.body_checks({"text_not_contains": ["Section two", "Section one"]}, ticket, "x"))
    assert [c.ok for c in lacks] == [True, False]
    absent = list(cs.body_checks({"html_not_contains": ["x"]}, ticket, "x"))
    assert [c.ok for c in absent] == [False]
