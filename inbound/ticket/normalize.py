"""Raw message bytes → the message-derived fields of a ticket.

The bytes are parsed once into a MIME tree (`inbound.ticket.mime_tree`); header fields are read once
(`inbound.ticket.mail_headers`, with mail-parser's address and date readers); the tree is sorted into body and
attachments (`inbound.ticket.mime_walk`, `inbound.ticket.attachments`); then come the derived facts: text
from HTML when
there is no plain text, the reply without its history, bounce and auto-reply classification.

Input that is not a message, or whose structure is too deep to follow, still gives every field: the
header-derived ones as far as the header section could be read, empty body fields, `parse_error` saying
why, and the raw bytes in `raw.content_base64` so nothing is lost.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from email.errors import MissingHeaderBodySeparatorDefect
from email.message import Message
from typing import Any

from inbound.ticket.attachments import attachment_records
from inbound.ticket.autoreply import classify
from inbound.ticket.bounce import detect_bounce, no_bounce
from inbound.ticket.html_reply import strip_html_reply
from inbound.ticket.html_text import html_to_text
from inbound.ticket.mail_headers import HeaderFields, first_message_id, iso_date, message_ids
from inbound.ticket.mime_tree import MimeLimitError, parse_header_section, parse_mime
from inbound.ticket.mime_walk import MimeContent, collect_content
from inbound.ticket.reply_strip import Reply, split_reply

log = logging.getLogger("postroom.normalize")

# Fields added in transit (by relays or by Postroom itself) rather than by the message's author.
_TRACE_FIELDS = frozenset(
    {"received", "return-path", "delivered-to", "x-original-to", "authentication-results", "received-spf"}
)
_TRACE_PREFIXES = ("arc-", "x-spam", "x-virus", "x-postroom")


def normalize_message(raw: bytes, *, mail_from: str, max_inline_attachment_bytes: int) -> dict[str, Any]:
    """The message-derived ticket fields of `raw`, in ticket order. Never raises on any input bytes.

    `mail_from` is the envelope sender: an empty one marks the message as automatic.
    """
    root, parse_error = _parse(raw)
    headers = HeaderFields.read(root)
    parse_error = parse_error or _not_a_message(raw, root, headers)
    content = collect_content(root) if parse_error is None else MimeContent()
    text = content.text
    html = content.html
    if text is None and html is not None:
        text = html_to_text(html)
    reply, html_reply = _replies(content.text, html)
    senders = headers.mailboxes("from")
    subject = headers.first("subject")
    bounce = detect_bounce(
        headers.ordered,
        root if parse_error is None else None,
        mail_from=mail_from,
        text=text,
        report_type=content.report_type,
    )
    auto_submitted, auto_submitted_reason = classify(
        headers.ordered, mail_from=mail_from, is_bounce=bounce["is_bounce"], report_type=content.report_type
    )
    return {
        "message_id": first_message_id(headers.first_unfolded("message-id")),
        "in_reply_to": first_message_id(headers.first_unfolded("in-reply-to")),
        "references": message_ids(" ".join(headers.unfolded.get("references", []))),
        "date": iso_date(headers.first_unfolded("date")),
        "subject": subject,
        "from": senders[0] if senders else None,
        "reply_to": headers.mailboxes("reply-to"),
        "to": headers.mailboxes("to"),
        "cc": headers.mailboxes("cc"),
        "text": text,
        "html": html,
        "stripped_text_reply": reply.text if text is not None else None,
        "stripped_signature": reply.signature,
        "stripped_html_reply": html_reply,
        "attachments": attachment_records(content.attachments, max_inline_bytes=max_inline_attachment_bytes),
        "headers": headers.ordered,
        "auto_submitted": auto_submitted,
        "auto_submitted_reason": auto_submitted_reason,
        "bounce": bounce,
        "raw": _raw_summary(raw, keep_content=parse_error is not None, max_bytes=max_inline_attachment_bytes),
        "parse_error": parse_error,
    }


def _replies(text: str | None, html: str | None) -> tuple[Reply, str | None]:
    """The text reply (with its signature) and the HTML reply; for HTML-only mail the text reply is read
    from the stripped HTML."""
    html_reply = strip_html_reply(html) if html is not None else None
    if text is not None:
        return split_reply(text), html_reply.html if html_reply else None
    if html_reply is not None:
        return split_reply(html_reply.text), html_reply.html
    return Reply("", None), None


def unparsed_message(raw: bytes, error: str, max_inline_attachment_bytes: int) -> dict[str, Any]:
    """The message fields for input nothing could be read from: all empty, `raw` kept, `error` given."""
    return {
        "message_id": None,
        "in_reply_to": None,
        "references": [],
        "date": None,
        "subject": None,
        "from": None,
        "reply_to": [],
        "to": [],
        "cc": [],
        "text": None,
        "html": None,
        "stripped_text_reply": None,
        "stripped_signature": None,
        "stripped_html_reply": None,
        "attachments": [],
        "headers": [],
        "auto_submitted": False,
        "auto_submitted_reason": None,
        "bounce": no_bounce(),
        "raw": _raw_summary(raw, keep_content=True, max_bytes=max_inline_attachment_bytes),
        "parse_error": error,
    }


def _parse(raw: bytes) -> tuple[Message, str | None]:
    try:
        return parse_mime(raw), None
    except MimeLimitError as exc:
        error = str(exc)
    except Exception as exc:  # the parser accepts any bytes, so this is a bug: log it, keep the message
        log.exception("MIME parser failed; falling back to the header section")
        error = f"MIME parser failed: {type(exc).__name__}"
    return parse_header_section(raw), error


def _not_a_message(raw: bytes, root: Message, headers: HeaderFields) -> str | None:
    """Why `raw` is not an RFC 5322 message at all, or None when it is one."""
    if any(not _is_trace_field(name) for name in headers.decoded):
        return None
    if not raw.strip():
        return "empty input: no header section and no body"
    if not headers.ordered:
        return "no header section: the input is not an RFC 5322 message"
    if any(isinstance(defect, MissingHeaderBodySeparatorDefect) for defect in root.defects):
        return "no header fields of its own: only trace fields precede non-header data"
    return None


def _is_trace_field(name: str) -> bool:
    return name in _TRACE_FIELDS or name.startswith(_TRACE_PREFIXES)


def _raw_summary(raw: bytes, *, keep_content: bool, max_bytes: int) -> dict[str, Any]:
    """Size and digest of the raw message; the bytes themselves only when they could not be parsed."""
    keep = keep_content and len(raw) <= max_bytes
    return {
        "size": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "content_base64": base64.b64encode(raw).decode("ascii") if keep else None,
    }
