"""Shared helpers for the tests that run the fixtures corpus (fixtures/mail/*.eml) through the normaliser."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

from inbound.ticket.payload import TicketContext, build_ticket, ticket_json, validate_ticket

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "mail"
SUPPORT = "support@acme.helpdesk.example"


def fixture_names() -> list[str]:
    return sorted(path.stem for path in FIXTURES.glob("*.eml"))


def raw_fixture(name: str) -> bytes:
    return (FIXTURES / f"{name}.eml").read_bytes()


def context(*, mail_from: str = "sender@example.net", **overrides: Any) -> TicketContext:
    values: dict[str, Any] = {
        "id": "20261122T054044Z-abc123",
        "received_at": "2026-11-22T05:40:44.123456Z",
        "tenant": "acme",
        "mailbox": "support",
        "mailbox_hash": "4711",
        "envelope": {
            "mail_from": mail_from,
            "rcpt_to": ["support+4711@acme.helpdesk.example"],
            "client_ip": "192.0.2.10",
            "helo": "mail.example.net",
            "tls": True,
        },
    }
    values.update(overrides)
    return TicketContext(**values)


def ticket_for(name: str, *, mail_from: str = "sender@example.net") -> dict[str, Any]:
    """The ticket of fixture `name`, checked against the schema and serialisable by orjson."""
    ticket = build_ticket(raw_fixture(name), context(mail_from=mail_from))
    validate_ticket(ticket)
    ticket_json(ticket)
    return ticket


def content(attachment: dict[str, Any]) -> bytes:
    """Decoded content of an attachment record, after checking its size and digest agree with it."""
    data = base64.b64decode(attachment["content_base64"], validate=True)
    assert attachment["size"] == len(data)
    assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
    return data


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
