"""Amazon SES notifications delivered as email through Amazon SNS ("AWS Notification Message").

SES reports bounces, complaints and deliveries as JSON. Delivered through an SNS e-mail subscription, the
body is either the SES document itself or an SNS envelope whose `Message` string holds it. SES's own words
are used: a `Bounce` lists `bouncedRecipients` (`emailAddress`, `action`, `status`, `diagnosticCode`), a
`Complaint` lists `complainedRecipients`, a `Delivery` lists the `recipients` it delivered to.

Bounded: at most `MAX_JSON_CHARS` characters are parsed (a hostile body cannot cost more, and too-deep
nesting is refused, not crashed on), at most `MAX_RECIPIENTS` recipients read, each field cut to
`MAX_FIELD_CHARS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from inbound.ticket.dsn import DsnRecipient, address_of, status_code

MAX_JSON_CHARS = 256 * 1024
MAX_RECIPIENTS = 200
MAX_FIELD_CHARS = 2_000
_KINDS = frozenset({"Bounce", "Complaint", "Delivery"})


@dataclass(frozen=True)
class SesNotification:
    """`kind` is "Bounce", "Complaint" or "Delivery"; `records` the recipients it is about, in the DSN
    reader's terms ("failed", "delivered", ... as `action`)."""

    kind: str
    records: list[DsnRecipient]


def read_ses_notification(body: str) -> SesNotification | None:
    """The SES notification a body carries, or None when it carries none."""
    document = _json_object(body)
    if document is not None and isinstance(document.get("Message"), str):  # the SNS envelope
        document = _json_object(document["Message"])
    if document is None:
        return None
    kind = document.get("notificationType", document.get("eventType"))
    if kind not in _KINDS:
        return None
    if kind == "Bounce":
        section = _mapping(document.get("bounce"))
        default_action = "failed"
        entries = _list(section.get("bouncedRecipients"))
    elif kind == "Complaint":
        section = _mapping(document.get("complaint"))
        default_action = "failed"
        entries = _list(section.get("complainedRecipients"))
    else:
        section = _mapping(document.get("delivery"))
        default_action = "delivered"
        entries = [{"emailAddress": address} for address in _list(section.get("recipients"))]
    records = [r for r in (_record(e, default_action) for e in entries[:MAX_RECIPIENTS]) if r is not None]
    return SesNotification(kind=str(kind), records=records)


def _record(entry: Any, default_action: str) -> DsnRecipient | None:
    entry = _mapping(entry)
    email = address_of(_text(entry.get("emailAddress")))
    if email is None:
        return None
    diagnostic = _text(entry.get("diagnosticCode"))
    return DsnRecipient(
        email=email,
        action=_text(entry.get("action")).lower() or default_action,
        status=status_code(_text(entry.get("status"))) or status_code(diagnostic),
        diagnostic=diagnostic,
    )


def _json_object(text: str) -> dict[str, Any] | None:
    """The JSON object that makes up `text` (surrounding text such as SNS's unsubscribe footer aside)."""
    text = text[:MAX_JSON_CHARS]
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        value = json.loads(text[start : end + 1], strict=False)  # SNS leaves raw newlines in strings
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value[:MAX_FIELD_CHARS] if isinstance(value, str) else ""
