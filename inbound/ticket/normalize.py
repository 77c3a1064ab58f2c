"""Raw message bytes → the message-derived fields of a ticket.

The bytes are parsed once into a MIME tree (`inbound.ticket.mime_tree`); header fields are read once
(`inbound.ticket.mail_headers`, with mail-parser's address and date readers); the tree is sorted into body and
attachments (`inbound.ticket.mime_walk`, `inbound.ticket.attachments`); then come the derived facts: text
from HTML when there is no plain text, the reply without its history, bounce and auto-reply classification.

Every field is computed on its own (`inbound.ticket.field_errors`): a field whose input trips a reader falls
back alone (to null, an empty list, ...) and `parse_errors` says which and why. The header fields come from
the top-level header section even when the MIME structure cannot be read, so classification (auto-reply,
bounce) still works. Whenever anything fell back, `parse_error` sums it up and the raw bytes are kept in
`raw.content_base64` (within the inline limit), so nothing is lost. Every step is linear in the input, and
no field is more than a small constant times the input's size (docs/payload.md, "Guarantees").
"""

from __future__ import annotations

import base64
import hashlib
from email.errors import MissingHeaderBodySeparatorDefect
from email.message import Message
from typing import Any

from inbound.ticket.attachments import attachment_records
from inbound.ticket.autoreply import classify
from inbound.ticket.bounce import detect_bounce, no_bounce
from inbound.ticket.field_errors import FieldErrors
from inbound.ticket.header_start import is_trace_field, repaired_header_start
from inbound.ticket.html_reply import strip_html_reply
from inbound.ticket.html_text import MAX_HTML_INPUT_CHARS, html_to_text
from inbound.ticket.mail_headers import HeaderFields, Mailbox, first_message_id, iso_date, message_ids
from inbound.ticket.mime_tree import MimeNotes, parse_header_section, parse_mime
from inbound.ticket.mime_walk import MimeContent, collect_content
from inbound.ticket.reply_strip import Reply, split_reply

_NOT_AUTOMATIC: tuple[bool, str | None] = (False, None)
_NO_REPLY = Reply("", None)
_NO_REPLIES: tuple[Reply, str | None] = (_NO_REPLY, None)
_NO_IDS: list[str] = []


def normalize_message(
    raw: bytes, *, mail_from: str, max_inline_attachment_bytes: int, headers_only: str | None = None
) -> dict[str, Any]:
    """The message-derived ticket fields of `raw`, in ticket order. Never raises on any input bytes.

    `mail_from` is the envelope sender: an empty one marks the message as automatic. `headers_only`: skip
    the body and say why (the fallback ticket after a time limit): only the header section is read.
    """
    errors = FieldErrors()
    notes = MimeNotes()
    unrepaired: tuple[bytes, str | None] = (raw, None)
    parsed, repair = errors.compute("headers", lambda: repaired_header_start(raw), unrepaired)
    if repair is not None:
        errors.add("headers", repair)
    root: Message | None = None
    if headers_only is not None:
        errors.add("mime", headers_only)
    else:
        root = errors.compute("mime", lambda: parse_mime(parsed, notes), None)
    top = (
        root
        if root is not None
        else errors.compute("headers", lambda: parse_header_section(parsed, notes), None)
    )
    headers = (
        errors.compute("headers", lambda: HeaderFields.read(top), HeaderFields()) if top else HeaderFields()
    )
    not_a_message = errors.compute("mime", lambda: _not_a_message(parsed, top, headers), None)
    if not_a_message is not None:
        errors.add("mime", not_a_message)
    for what, why in notes.notes:
        errors.add(what, why)
    content = MimeContent()
    if root is not None and not_a_message is None:
        content = errors.compute("body", lambda: collect_content(root), MimeContent())
    for what, why in content.failures:
        errors.add(what, why)
    text = content.text
    html = content.html
    if text is None and html is not None:
        text = errors.compute("text", lambda: html_to_text(html), None)
        if len(html) > MAX_HTML_INPUT_CHARS:
            errors.add("text", f"made from the first {MAX_HTML_INPUT_CHARS} characters of the HTML")
    reply, html_reply = errors.compute(
        "stripped_text_reply", lambda: _replies(text, content.text, html), _NO_REPLIES
    )
    senders: list[Mailbox] = errors.compute("from", lambda: headers.mailboxes("from"), [])
    subject = headers.first("subject")
    # Classification reads the raw header lines (and the tree when there is one), so it works even when the
    # structured parse fell back.
    bounce = errors.compute(
        "bounce",
        lambda: detect_bounce(
            headers.ordered, root, mail_from=mail_from, text=text, report_type=content.report_type
        ),
        no_bounce(),
    )
    auto_submitted, auto_submitted_reason = errors.compute(
        "auto_submitted",
        lambda: classify(
            headers.ordered,
            mail_from=mail_from,
            is_bounce=bounce["is_bounce"],
            report_type=_report_type(content.report_type, bounce),
        ),
        _NOT_AUTOMATIC,
    )
    no_mailboxes: list[Mailbox] = []
    first_id = headers.first_unfolded
    message = {
        "message_id": errors.compute("message_id", lambda: first_message_id(first_id("message-id")), None),
        "in_reply_to": errors.compute("in_reply_to", lambda: first_message_id(first_id("in-reply-to")), None),
        "references": errors.compute(
            "references", lambda: message_ids(" ".join(headers.unfolded.get("references", []))), _NO_IDS
        ),
        "date": errors.compute("date", lambda: iso_date(first_id("date")), None),
        "subject": subject,
        "from": senders[0] if senders else headers.display_name_only("from"),
        "reply_to": errors.compute("reply_to", lambda: headers.mailboxes("reply-to"), no_mailboxes),
        "to": errors.compute("to", lambda: headers.mailboxes("to"), no_mailboxes),
        "cc": errors.compute("cc", lambda: headers.mailboxes("cc"), no_mailboxes),
        "text": text,
        "html": html,
        "stripped_text_reply": reply.text if text is not None else None,
        "stripped_signature": reply.signature,
        "stripped_html_reply": html_reply,
        "attachments": attachment_records(
            content.attachments, max_inline_bytes=max_inline_attachment_bytes, errors=errors
        ),
        "headers": headers.ordered,
        "auto_submitted": auto_submitted,
        "auto_submitted_reason": auto_submitted_reason,
        "bounce": bounce,
    }
    parse_error = errors.summary()
    message["raw"] = _raw_summary(
        raw, keep_content=parse_error is not None, max_bytes=max_inline_attachment_bytes
    )
    message["parse_error"] = parse_error
    message["parse_errors"] = errors.entries
    return message


def _replies(text: str | None, plain: str | None, html: str | None) -> tuple[Reply, str | None]:
    """The text reply (with its signature) and the HTML reply. For HTML-only mail the text reply is read
    from the stripped HTML, not from the whole HTML's text."""
    html_reply = strip_html_reply(html) if html is not None else None
    if plain is not None:
        return split_reply(plain), html_reply.html if html_reply else None
    if html_reply is not None:
        return split_reply(html_reply.text), html_reply.html
    if text is not None:
        return split_reply(text), None
    return _NO_REPLY, None


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
        "parse_errors": [{"field": "*", "reason": error}],
    }


def _not_a_message(raw: bytes, root: Message | None, headers: HeaderFields) -> str | None:
    """Why `raw` is not an RFC 5322 message at all, or None when it is one."""
    if any(not is_trace_field(name) for name in headers.decoded):
        return None
    if not raw.strip():
        return "empty input: no header section and no body"
    if not headers.ordered:
        return "no header section: the input is not an RFC 5322 message"
    if root is not None and any(
        isinstance(defect, MissingHeaderBodySeparatorDefect) for defect in root.defects
    ):
        return "no header fields of its own: only trace fields precede non-header data"
    return None


def _raw_summary(raw: bytes, *, keep_content: bool, max_bytes: int) -> dict[str, Any]:
    """Size and digest of the raw message; the bytes themselves only when something could not be read."""
    keep = keep_content and len(raw) <= max_bytes
    return {
        "size": len(raw),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "content_base64": base64.b64encode(raw).decode("ascii") if keep else None,
    }


def _report_type(declared: str | None, bounce: dict[str, Any]) -> str | None:
    """The report type for classification: an abuse report found below another multipart still counts."""
    if declared is None and bounce.get("type") == "feedback_report":
        return "feedback-report"
    return declared
