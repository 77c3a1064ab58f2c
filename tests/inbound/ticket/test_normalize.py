"""Every fixture in fixtures/mail becomes a schema-valid ticket with the field values it was written for."""

from __future__ import annotations

import base64
import email
import hashlib
from email.policy import compat32
from typing import Any

import pytest

from inbound.ticket.normalize import normalize_message
from inbound.ticket.payload import build_ticket
from tests.inbound.ticket.corpus import content, context, fixture_names, raw_fixture, ticket_for
from tests.inbound.ticket.corpus_expectations import EXPECTED, NULL_SENDER

MIN_CORPUS_SIZE = 45


def test_corpus_is_large_and_every_fixture_has_expectations() -> None:
    names = fixture_names()
    assert len(names) >= MIN_CORPUS_SIZE
    assert sorted(EXPECTED) == names


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_ticket_fields(name: str) -> None:
    ticket = ticket_for(name, mail_from="" if name in NULL_SENDER else "sender@example.net")
    for key, expected in EXPECTED[name].items():
        _check(ticket, key, expected)


def _check(ticket: dict[str, Any], key: str, expected: Any) -> None:
    if key == "text_contains":
        assert all(part in ticket["text"] for part in expected), ticket["text"]
    elif key == "text_excludes":
        assert not any(part in (ticket["text"] or "") for part in expected), ticket["text"]
    elif key == "html_contains":
        assert all(part in ticket["html"] for part in expected), ticket["html"]
    elif key == "headers_contain":
        assert all(pair in ticket["headers"] for pair in expected)
    elif key == "attachments":
        assert len(ticket["attachments"]) == len(expected), [a["filename"] for a in ticket["attachments"]]
        for attachment, wanted in zip(ticket["attachments"], expected, strict=True):
            _check_attachment(attachment, wanted)
    else:
        assert ticket[key] == expected, key


def _check_attachment(attachment: dict[str, Any], wanted: dict[str, Any]) -> None:
    for key, value in wanted.items():
        if key == "content":
            assert content(attachment) == value
        elif key == "content_prefix":
            assert content(attachment).startswith(value)
        else:
            assert attachment[key] == value, key


def test_every_ticket_keeps_raw_size_and_digest() -> None:
    for name in fixture_names():
        raw = raw_fixture(name)
        summary = ticket_for(name)["raw"]
        assert summary["size"] == len(raw)
        assert summary["sha256"] == hashlib.sha256(raw).hexdigest()


@pytest.mark.parametrize("name", ["empty", "binary-garbage", "binary-after-trace-header", "deep-nesting"])
def test_unparseable_input_keeps_the_raw_bytes(name: str) -> None:
    ticket = ticket_for(name)
    assert ticket["parse_error"]
    assert base64.b64decode(ticket["raw"]["content_base64"]) == raw_fixture(name)


def test_parseable_messages_do_not_repeat_the_raw_bytes() -> None:
    assert ticket_for("plain-ascii")["raw"]["content_base64"] is None


def test_forwarded_message_attachment_is_the_whole_inner_message() -> None:
    attachment = ticket_for("forwarded-rfc822")["attachments"][0]
    inner = email.message_from_bytes(content(attachment), policy=compat32)
    assert inner["Subject"] == "Invoice 2026-114 overdue"
    assert [part.get_filename() for part in inner.walk()][-1] == "invoice-2026-114.pdf"


def test_headers_keep_order_and_repeats_with_values_unfolded() -> None:
    headers = ticket_for("received-500")["headers"]
    assert len(headers) == 508
    assert [name for name, _ in headers[:500]] == ["Received"] * 500
    assert headers[0][1] == (
        "from relay500.example.net (relay500.example.net [198.51.100.1]) by relay501.example.net "
        "with ESMTP id R0500; Mon, 02 Nov 2026 10:20:00 +0000"
    )
    assert headers[-1] == ["Content-Transfer-Encoding", "8bit"]


def test_huge_header_is_kept_whole_and_unfolded() -> None:
    headers = dict(ticket_for("huge-header-50k")["headers"])
    blob = headers["X-Tracking-Blob"]
    assert len(blob) > 50_000
    assert "\n" not in blob
    assert blob.startswith("token")


def test_header_values_are_decoded_to_unicode() -> None:
    headers = dict(ticket_for("koi8-r")["headers"])
    assert headers["Subject"] == "Проблема с доступом"
    assert headers["From"] == "Иван Петров <ivan@example.ru>"


def test_inline_attachment_limit_truncates_large_content() -> None:
    raw = raw_fixture("winmail-dat")
    limited = normalize_message(raw, mail_from="a@example.com", max_inline_attachment_bytes=10)
    full = normalize_message(raw, mail_from="a@example.com", max_inline_attachment_bytes=64)
    (truncated,) = limited["attachments"]
    (kept,) = full["attachments"]
    assert truncated["truncated"] is True
    assert truncated["content_base64"] is None
    assert truncated["sha256"] == kept["sha256"]
    assert truncated["size"] == kept["size"] == 64
    assert kept["truncated"] is False
    assert content(kept).startswith(b"\x78\x9f\x3e\x22")


def test_replies_signature_and_html_reply_fields() -> None:
    gmail = ticket_for("gmail-reply")
    assert gmail["stripped_text_reply"] == "Sounds good, I will try that tomorrow morning."
    assert gmail["stripped_signature"] == "Alice Example\nExample Corp, floor 3"
    html = ticket_for("gmail-html-reply")
    assert html["stripped_html_reply"] == '<div dir="ltr">CSV would be perfect, thanks!</div><br>'


def test_an_html_only_reply_gets_its_text_reply_from_the_stripped_html() -> None:
    raw = (
        b"From: Bob <bob@example.com>\r\nTo: support@acme.example\r\nSubject: Re: export\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<div>Works now, thanks!</div><div>-- </div><div>Bob</div>"
        b'<div id="divRplyFwdMsg"><b>From:</b> Acme Support</div><div>Did the export work?</div>'
    )
    ticket = build_ticket(raw, context())
    assert ticket["stripped_html_reply"] == "<div>Works now, thanks!</div><div>-- </div><div>Bob</div>"
    assert ticket["stripped_text_reply"] == "Works now, thanks!"
    assert ticket["stripped_signature"] == "Bob"
    assert "Did the export work?" in ticket["text"]


def test_an_abuse_report_below_a_multipart_mixed_is_automatic() -> None:
    raw = (
        b"From: fbl@isp.example\r\nTo: postmaster@example.com\r\nSubject: Abuse feedback\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
        b"--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n"
        b"Original-Rcpt-To: rfc822;complainer@example.org\r\n--b--\r\n"
    )
    ticket = normalize_message(raw, mail_from="fbl@isp.example", max_inline_attachment_bytes=1024)
    assert ticket["bounce"]["type"] == "feedback_report"
    assert (ticket["auto_submitted"], ticket["auto_submitted_reason"]) == (True, "report:feedback-report")
