"""Class 2 of issue 13: one unreadable field costs only itself; classification reads the raw header lines."""

from __future__ import annotations

import pytest

from inbound.ticket import normalize
from tests.inbound.ticket.hostile import HEAD, ticket, with_attachment_header

AUTO = b"Auto-Submitted: auto-replied\r\n"


@pytest.mark.parametrize(
    ("header", "filename"),
    [
        (b"Content-Disposition: attachment; filename*=undefined''a.pdf", "a.pdf"),  # unknown charset
        (b"Content-Disposition: attachment; filename*=idna''%FF.pdf", "ÿ.pdf"),  # not a text charset
        (b"Content-Disposition: attachment; filename*=ut\x00f-8''a.pdf", "a.pdf"),  # NUL in the charset
        (b"Content-Disposition: attachment; filename*=base64''YQ.pdf", "YQ.pdf"),  # a bytes codec
        (b"Content-Type: application/pdf; name*0=a; name*=b", "a"),  # numbered and unnumbered segments
        (b"Content-Type: application/pdf; name*1=b.pdf; name*0=a", "ab.pdf"),  # segments out of order
        (b"Content-Type: application/pdf; name*0*=utf-8''%E2%82%AC; name*1=.pdf", "€.pdf"),
        (b'Content-Type: application/pdf; name="unterminated.pdf', "unterminated.pdf"),
        (b"Content-Type: application/pdf; charset*=x-\x00''; name=x.pdf", "x.pdf"),
    ],
)
def test_a_hostile_parameter_costs_no_other_field(header: bytes, filename: str) -> None:
    result = ticket(with_attachment_header(header, AUTO))
    assert result["subject"] == "hi"
    assert result["from"] == {"name": "Alice", "email": "alice@example.com"}
    assert result["text"] == "the body"
    assert result["auto_submitted"] is True
    assert [attachment["filename"] for attachment in result["attachments"]] == [filename]


@pytest.mark.parametrize("field", [b"From", b"To", b"Cc", b"Reply-To"])
def test_an_address_field_of_nested_comments_falls_back_alone(field: bytes) -> None:
    raw = HEAD.replace(b"To:", b"X-To:").replace(b"From:", b"X-From:") + field + b": "
    raw += b"(" * 3000 + b"\r\nSubject: hi\r\n" + AUTO + b"\r\nbody\r\n"
    result = ticket(raw)
    assert result["subject"] == "hi"
    assert result["text"] == "body\n"
    assert result["auto_submitted"] is True


def test_classification_survives_an_unreadable_mime_structure(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(normalize, "parse_mime", broken)
    raw = HEAD + b"Subject: Out of office\r\nPrecedence: bulk\r\n" + AUTO + b"\r\nbody\r\n"
    result = ticket(raw)
    assert result["auto_submitted"] is True
    assert result["auto_submitted_reason"] == "auto-submitted:auto-replied"
    assert result["subject"] == "Out of office"
    assert result["message_id"] == "m1@example.com"
    assert result["parse_errors"] == [
        {"field": "mime", "reason": "RecursionError: maximum recursion depth exceeded"}
    ]
    assert result["parse_error"] and result["raw"]["content_base64"]


def test_a_failing_field_reader_is_named_in_parse_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(value: str | None) -> str | None:
        raise ValueError("bad date")

    monkeypatch.setattr(normalize, "iso_date", broken)
    result = ticket(HEAD + b"Subject: hi\r\nDate: whenever\r\n\r\nbody\r\n")
    assert result["date"] is None
    assert result["subject"] == "hi" and result["text"] == "body\n"
    assert result["parse_errors"] == [{"field": "date", "reason": "ValueError: bad date"}]
    assert result["parse_error"] == "date: ValueError: bad date"


def test_a_readable_message_has_no_parse_errors() -> None:
    result = ticket(HEAD + b"Subject: hi\r\n\r\nbody\r\n")
    assert result["parse_errors"] == [] and result["parse_error"] is None
    assert result["raw"]["content_base64"] is None
