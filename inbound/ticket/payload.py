"""The versioned ticket payload (`postroom.ticket/1`): building it, serialising it, validating it.

`build_ticket` is pure and takes and returns picklable values, so the delivery runner can call it in a
worker process. `ticket_json` gives the exact bytes POSTed to the helpdesk. The JSON Schema ships in
`inbound/ticket/schema/ticket-1.json`; docs/payload.md describes every key.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import orjson

from inbound.ticket.mime_text import scrub_surrogates
from inbound.ticket.normalize import normalize_message, unparsed_message

SCHEMA_ID = "postroom.ticket/1"
SCHEMA_RESOURCE = "schema/ticket-1.json"
DEFAULT_MAX_INLINE_ATTACHMENT_BYTES = 10 * 1024 * 1024

log = logging.getLogger("postroom.payload")


@dataclass(frozen=True)
class TicketContext:
    """What Postroom knows about a message besides its bytes: identity, routing, envelope, filter facts.

    `received_at` is ISO 8601 UTC with a "Z" suffix; `envelope` has the keys mail_from (str, "" for the
    null sender), rcpt_to (list[str]), client_ip (str), helo (str) and tls (bool).
    """

    id: str
    received_at: str
    tenant: str
    mailbox: str
    mailbox_hash: str | None
    envelope: dict[str, Any]
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    auth: dict[str, Any] | None = None
    spam: dict[str, Any] | None = None
    virus: dict[str, Any] | None = None


def build_ticket(
    raw: bytes,
    context: TicketContext,
    *,
    max_inline_attachment_bytes: int = DEFAULT_MAX_INLINE_ATTACHMENT_BYTES,
    headers_only: str | None = None,
) -> dict[str, Any]:
    """The ticket for one message. Never raises for any `raw`: unparseable input sets `parse_error`.

    `headers_only`: the fallback ticket (after a time limit): only the header section is read, and
    `parse_error` gives this reason."""
    envelope = _clean(context.envelope)
    mail_from = str(envelope.get("mail_from") or "")
    try:
        message = normalize_message(
            raw,
            mail_from=mail_from,
            max_inline_attachment_bytes=max_inline_attachment_bytes,
            headers_only=headers_only,
        )
    except Exception as exc:  # a bug in the normaliser must not lose the message: deliver it raw
        log.exception("normalising message %s failed", context.id)
        message = unparsed_message(
            raw, f"normaliser failed: {type(exc).__name__}", max_inline_attachment_bytes
        )
    return {
        "schema": SCHEMA_ID,
        "id": context.id,
        "received_at": context.received_at,
        "tenant": _clean(context.tenant),
        "mailbox": _clean(context.mailbox),
        "mailbox_hash": _clean(context.mailbox_hash),
        "envelope": envelope,
        **{key: value for key, value in message.items() if key not in ("raw", "parse_error", "parse_errors")},
        "verdicts": _clean(list(context.verdicts)),
        "auth": _clean(context.auth),
        "spam": _clean(context.spam),
        "virus": _clean(context.virus),
        "raw": message["raw"],
        "parse_error": message["parse_error"],
        "parse_errors": message["parse_errors"],
    }


def ticket_json(ticket: dict[str, Any]) -> bytes:
    """The exact bytes POSTed: compact UTF-8 JSON, keys in ticket order."""
    return orjson.dumps(ticket)


def load_schema() -> dict[str, Any]:
    """The published JSON Schema of the ticket (a fresh copy each call)."""
    return copy.deepcopy(_schema())


def validate_ticket(ticket: dict[str, Any]) -> None:
    """Raise `jsonschema.ValidationError` (the most relevant error) unless `ticket` matches the schema."""
    import jsonschema  # type: ignore[import-untyped]  # here: ~2 MB a worker never needs (tests, receivers)

    error = jsonschema.exceptions.best_match(_validator().iter_errors(ticket))
    if error is not None:
        raise error


@cache
def _schema() -> dict[str, Any]:
    text = resources.files("inbound.ticket").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> Any:
    import jsonschema

    schema = _schema()
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def _clean(value: Any) -> Any:
    """A copy of a context value with every string made valid Unicode (orjson refuses lone surrogates).

    Context values come from the SMTP session, where undecodable client bytes may survive as surrogates.
    """
    if isinstance(value, str):
        return scrub_surrogates(value)
    if isinstance(value, dict):
        return {scrub_surrogates(str(key)): _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value
