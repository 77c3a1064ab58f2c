"""Was this message sent by a machine? The helpdesk must never answer an auto-responder.

`classify` returns whether the message is automatic and the first reason found, as a stable key:

- ``auto-submitted:<value>``: RFC 3834 Auto-Submitted with any value but "no";
- ``x-autoreply`` / ``x-autorespond``: the headers many auto-responders add;
- ``precedence:<value>``: Precedence bulk, junk, list or auto_reply;
- ``x-auto-response-suppress``: Exchange's header when it asks for no automatic answers (All, OOF or
  AutoReply). Values naming only receipts (DR, NDR, RN, NRN) appear on ordinary Outlook mail and do not count;
- ``bounce``: a delivery failure report (see `inbound.ticket.bounce`);
- ``report:<report-type>``: any other multipart/report (read receipts, delay notices, abuse feedback);
- ``list-id`` / ``list-unsubscribe``: mailing-list and newsletter traffic;
- ``null-sender``: the envelope sender is empty (``MAIL FROM:<>``), as for every bounce and many robots.
"""

from __future__ import annotations

from inbound.ticket.mail_headers import HeaderFields

_NEGATIVE_VALUES = frozenset({"no", "false", "0"})
_AUTOMATIC_PRECEDENCE = frozenset({"bulk", "junk", "list", "auto_reply", "auto-reply"})
_SUPPRESSED_AUTOMATIC_ANSWERS = frozenset({"all", "oof", "autoreply"})


def classify(
    headers: HeaderFields, *, mail_from: str, is_bounce: bool, report_type: str | None
) -> tuple[bool, str | None]:
    """(auto_submitted, auto_submitted_reason) for the ticket."""
    reason = _reason_from_headers(headers)
    if reason is None and is_bounce:
        reason = "bounce"
    if reason is None and report_type:
        reason = f"report:{report_type}"
    if reason is None:
        reason = next((name for name in ("list-id", "list-unsubscribe") if headers.has(name)), None)
    if reason is None and mail_from.strip() in ("", "<>"):
        reason = "null-sender"
    return reason is not None, reason


def _reason_from_headers(headers: HeaderFields) -> str | None:
    auto_submitted = _token(headers.first("auto-submitted"))
    if auto_submitted and auto_submitted not in _NEGATIVE_VALUES:
        return f"auto-submitted:{auto_submitted}"
    for name in ("x-autoreply", "x-autorespond"):
        if headers.has(name) and _token(headers.first(name)) not in _NEGATIVE_VALUES:
            return name
    precedence = _token(headers.first("precedence"))
    if precedence in _AUTOMATIC_PRECEDENCE:
        return f"precedence:{precedence}"
    suppress = (headers.first("x-auto-response-suppress") or "").lower().replace(",", " ").split()
    if _SUPPRESSED_AUTOMATIC_ANSWERS.intersection(suppress):
        return "x-auto-response-suppress"
    return None


def _token(value: str | None) -> str:
    """The leading token of a structured value ("auto-replied; owner-email=..." → "auto-replied")."""
    return (value or "").split(";", 1)[0].strip().lower()
