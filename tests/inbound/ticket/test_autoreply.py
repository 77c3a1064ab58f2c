from __future__ import annotations

import pytest

from inbound.ticket.autoreply import classify
from inbound.ticket.mail_headers import HeaderFields
from inbound.ticket.mime_tree import parse_header_section


def _classify(
    headers: str,
    *,
    mail_from: str = "alice@example.com",
    is_bounce: bool = False,
    report_type: str | None = None,
) -> tuple[bool, str | None]:
    raw = f"From: alice@example.com\r\nSubject: hello\r\n{headers}\r\n".encode()
    fields = HeaderFields.read(parse_header_section(raw))
    return classify(fields.ordered, mail_from=mail_from, is_bounce=is_bounce, report_type=report_type)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ("Auto-Submitted: auto-replied", "auto-submitted:auto-replied"),
        ("Auto-Submitted: Auto-Generated; owner-email=a@example.com", "auto-submitted:auto-generated"),
        ("X-Autoreply: yes", "x-autoreply"),
        ("X-Autoreply:", "x-autoreply"),
        ("X-Autorespond: Vacation", "x-autorespond"),
        ("Precedence: bulk", "precedence:bulk"),
        ("Precedence: JUNK", "precedence:junk"),
        ("Precedence: list", "precedence:list"),
        ("Precedence: auto_reply", "precedence:auto_reply"),
        ("X-Auto-Response-Suppress: All", "x-auto-response-suppress"),
        ("X-Auto-Response-Suppress: DR, OOF, AutoReply", "x-auto-response-suppress"),
        ("List-Id: Users <users.lists.example.org>", "list-id"),
        ("List-Unsubscribe: <mailto:unsubscribe@example.org>", "list-unsubscribe"),
    ],
)
def test_automatic_headers(headers: str, expected: str) -> None:
    assert _classify(headers) == (True, expected)


@pytest.mark.parametrize(
    "headers",
    [
        "",
        "Auto-Submitted: no",
        "X-Autoreply: no",
        "Precedence: first-class",
        "X-Auto-Response-Suppress: RN, NRN",  # read-receipt suppression only, as ordinary Outlook mail has
    ],
)
def test_ordinary_mail_is_not_automatic(headers: str) -> None:
    assert _classify(headers) == (False, None)


@pytest.mark.parametrize("mail_from", ["", "<>", "  "])
def test_null_sender(mail_from: str) -> None:
    assert _classify("", mail_from=mail_from) == (True, "null-sender")


def test_bounce_and_report_reasons() -> None:
    assert _classify("", mail_from="", is_bounce=True, report_type="delivery-status") == (True, "bounce")
    assert _classify("", report_type="disposition-notification") == (True, "report:disposition-notification")


def test_the_most_specific_reason_wins() -> None:
    headers = "Auto-Submitted: auto-replied\r\nPrecedence: bulk\r\nList-Id: <l.example.org>"
    assert _classify(headers, mail_from="", is_bounce=True) == (True, "auto-submitted:auto-replied")
    assert _classify("Precedence: bulk\r\nList-Id: <l.example.org>", mail_from="") == (
        True,
        "precedence:bulk",
    )
    assert _classify("List-Id: <l.example.org>", mail_from="", is_bounce=True) == (True, "bounce")
