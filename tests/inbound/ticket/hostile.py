"""Helpers for the hostile-input tests: a ticket for raw bytes, checked like every ticket in the suite."""

from __future__ import annotations

from typing import Any

from inbound.ticket.payload import build_ticket, ticket_json, validate_ticket
from tests.inbound.ticket.corpus import context

HEAD = b"From: Alice <alice@example.com>\r\nTo: support@example.com\r\nMessage-ID: <m1@example.com>\r\n"


def ticket(raw: bytes, *, mail_from: str = "sender@example.net") -> dict[str, Any]:
    """The ticket of `raw`, validated against the schema and serialised."""
    result = build_ticket(raw, context(mail_from=mail_from))
    validate_ticket(result)
    ticket_json(result)
    return result


def with_attachment_header(header: bytes, extra_head: bytes = b"") -> bytes:
    """A message with a text body and one attachment part carrying `header` (a Content-* line)."""
    return (
        HEAD + extra_head + b'Subject: hi\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nthe body\r\n"
        b"--b\r\n" + header + b"\r\n\r\n%PDF-1.4\r\n--b--\r\n"
    )
