"""Is this message a bounce, which recipients failed, and why?

Sources, most trusted first:
1. RFC 3464 reports: every `message/delivery-status` part outside a returned message, read by
   `inbound.ticket.dsn` (bounded; `Original-Recipient` preferred). Recipients whose action is "failed" make
   a bounce; a report whose recipients are only "delayed" is a delay notice, not a bounce; "delivered",
   "relayed" and "expanded" reports are receipts.
2. `X-Failed-Recipients` (Exim and others): the failed addresses, listed by the MTA itself.
3. flufl.bounce's MTA-specific detectors, then the bounce's text as read by `inbound.ticket.bounce_formats`
   (qmail, Exim, Exchange, Gmail, Yahoo, ...) where flufl finds nothing; the text gives every address the
   server's words around it, for the reason.
A report whose multipart boundary is mangled is still read, from the unsplit body. A message without a
report is only taken for a bounce when it comes from the null sender or a mailer daemon and something says
it is one: a bounce subject, `X-Failed-Recipients`, or a detector finding failures.
Amazon SES's JSON notifications, mailed by SNS, are read like reports (`inbound.ticket.bounce_ses`).
ARF feedback reports (`report-type=feedback-report`) are abuse complaints, not bounces; so is Outlook.com's
non-ARF complaint feed (the complained-about message attached, marked `X-HmXmrOriginalRecipient`).

The ticket's `bounce`: `is_bounce`, `type` (`failed` | `delayed` | `feedback_report` | null), `recipients`
(the failed addresses) and `recipients_detail` (`{email, status, kind, reason}`; see
`inbound.ticket.bounce_reason`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from email.message import Message
from typing import Any

from flufl.bounce import all_failures

from inbound.ticket.bounce_formats import explanation_text, failed_recipients_in_text
from inbound.ticket.bounce_reason import classify_failure, failure_reason
from inbound.ticket.bounce_ses import SesNotification, read_ses_notification
from inbound.ticket.dsn import DsnRecipient, address_of, read_delivery_status, status_code
from inbound.ticket.mime_text import decode_bytes
from inbound.ticket.mime_tree import MAX_DEPTH, part_bytes

log = logging.getLogger("postroom.bounce")

_REPORT_TYPES = frozenset(
    {"message/delivery-status", "message/global-delivery-status", "message/xdelivery-status"}
)
_FEEDBACK_TYPES = frozenset({"message/feedback-report"})
_ORIGINAL_RCPT_TO = re.compile(r"^original-rcpt-to[ \t]*:[ \t]*(.{1,2000})$", re.IGNORECASE | re.MULTILINE)
_NOT_FAILED_ACTIONS = frozenset({"delayed", "delivered", "relayed", "expanded"})
_DAEMON_SENDER = re.compile(
    r"mailer-?daemon|mail-daemon|postmaster|mail\s*delivery\s*(?:sub)?system|mail\.delivery|mdaemon"
    r"|^\s*<>\s*$|<>",
    re.IGNORECASE,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery\s+(?:status\s+notification|report|notification|fail|has\s+failed|problem|error)"
    r"|returned\s+mail|returning\s+to\s+sender|mail\s+delivery\s+(?:failed|subsystem)|failure\s+(?:notice|delivery)"
    r"|could\s+not\s+be\s+delivered|non-?deliver|not\s+delivered|failed\s+mail|mail\s+failed|delivery\s+status"
    r"|unzustellbar|non\s+remis|onbestelbaar|no\s+se\s+puede\s+entregar|user\s+unknown|rejected\s+mail"
    r"|processing\s+error|returned\s+to\s+sender|nicht\s+zustellbar|mail\s+failure",
    re.IGNORECASE,
)
# A warning that delivery is late, not failed ("will keep trying", "Delivery Status Notification (Delay)").
_DELAY_NOTICE = re.compile(
    r"warning\s+message\s+only|will\s+(?:continue\s+to\s+try|keep\s+trying|retry|try\s+again)"
    r"|still\s+(?:trying|being\s+retried)|has\s+not\s+(?:yet\s+)?been\s+delivered\s+yet|\(delay\)"
    r"|delivery\s+(?:delayed|delay|warning)|delayed\s+mail|not\s+yet\s+been\s+delivered|no\s+action\s+is\s+required"
    r"|^warning:.*\bdelayed\b|postponed",
    re.IGNORECASE,
)
_FAILED_RECIPIENTS_HEADER = "x-failed-recipients"
_ADDRESS = re.compile(r"[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+")
_MAX_HEADER_ADDRESSES = 100
_MAX_REPORT_BYTES = 256 * 1024
_MAX_UNSPLIT_BYTES = 1024 * 1024
_REPORT_PART_HEADER = re.compile(
    r"^content-type:\s*message/(?:x|global-)?delivery-status\b.*$", re.IGNORECASE | re.MULTILINE
)
_PASTED_REPORT = re.compile(r"^reporting-mta[ \t]*:", re.IGNORECASE | re.MULTILINE)
_SNS_MESSAGE_ID_HEADER = "x-amz-sns-message-id"
_AMAZON_SENDER = re.compile(r"@(?:[a-z0-9-]+\.)*(?:amazonses|amazonaws)\.com\b", re.IGNORECASE)
_COMPLAINT_RECIPIENT_HEADER = "X-HmXmrOriginalRecipient"
_MAX_COMPLAINT_PARTS = 16
_MAX_COMPLAINT_HEADER_CHARS = 2_000
MAX_FLUFL_PARTS = 64
MAX_FLUFL_CHARS = 512 * 1024


def no_bounce() -> dict[str, Any]:
    return {"is_bounce": False, "type": None, "recipients": [], "recipients_detail": []}


def detect_bounce(
    header_lines: Sequence[Sequence[str]],
    root: Message | None,
    *,
    mail_from: str,
    text: str | None,
    report_type: str | None,
) -> dict[str, Any]:
    """The ticket's `bounce` object. `header_lines` are the top-level (name, decoded value) pairs; `root`
    is the MIME tree when the message could be parsed."""
    feedback = list(_report_parts(root, _FEEDBACK_TYPES))
    if report_type == "feedback-report" or feedback:
        return _feedback_report(feedback)
    complained = _microsoft_complaint(root)
    if complained is not None:
        return {**no_bounce(), "type": "feedback_report", "recipients": complained}
    unsplit = _unsplit_body(root)
    text = text or unsplit or ""
    reports = [read_delivery_status(_report_text(part)).recipients for part in _report_parts(root)]
    if not reports and unsplit:
        reports = [read_delivery_status(report).recipients for report in _reports_in_unsplit_body(unsplit)]
    ses = None if reports else _ses_notification(header_lines, text)
    if ses is not None and ses.kind == "Complaint":
        return {
            **no_bounce(),
            "type": "feedback_report",
            "recipients": [r.email.lower() for r in ses.records],
        }
    if ses is not None:
        reports = [ses.records]
    from_reports = _from_records([record for report in reports for record in report], text)
    if from_reports is not None:
        return from_reports
    sender = _first(header_lines, "from") or ""
    subject = _first(header_lines, "subject") or ""
    automatic_sender = mail_from.strip() in ("", "<>") or bool(_DAEMON_SENDER.search(sender))
    if not automatic_sender:
        return no_bounce()
    pasted = _from_records(_report_in_plain_text(text, root), text)
    if pasted is not None:
        return pasted
    header_failed = _header_addresses(_first(header_lines, _FAILED_RECIPIENTS_HEADER))
    evidence = header_failed or reports or _BOUNCE_SUBJECT.search(subject) or _DELAY_NOTICE.search(subject)
    flufl = _flufl(root)
    if not (evidence or any(flufl)):
        return no_bounce()
    return _from_text(text, subject, flufl, header_failed, ignore=_own_addresses(sender, mail_from))


def _from_text(
    text: str,
    subject: str,
    flufl: tuple[list[str], list[str]],
    header_failed: list[str],
    *,
    ignore: frozenset[str],
) -> dict[str, Any]:
    explanation = explanation_text(text)
    in_text = {failure.email.lower(): failure for failure in failed_recipients_in_text(text, ignore=ignore)}
    temporary, permanent = flufl
    if not (header_failed or permanent) and (temporary or _DELAY_NOTICE.search(f"{subject}\n{explanation}")):
        waiting = [a for a in temporary if a not in ignore] or list(in_text)
        return _delayed([_text_detail(address, "", explanation, action="delayed") for address in waiting])
    # flufl.bounce's MTA-specific detectors before the generic text reader: on the corpus's
    # BounceParser samples both find every address, on flufl.bounce's own samples flufl misses fewer.
    addresses = (
        header_failed or _named_in(explanation, [a for a in permanent if a not in ignore]) or list(in_text)
    )
    details = []
    for address in addresses:
        failure = in_text.get(address.lower())
        context = failure.context if failure else ""
        details.append(_text_detail(failure.email if failure else address, context, explanation))
    return _result("failed", details)


def _from_records(records: list[DsnRecipient], text: str) -> dict[str, Any] | None:
    """The bounce a report's recipient blocks make (failed, delayed, or a receipt); None without any."""
    failed = [
        r for r in records if r.action == "failed" or (r.action not in _NOT_FAILED_ACTIONS and _is_5xx(r))
    ]
    if failed:
        return _result("failed", [_dsn_detail(record, text) for record in _unique(failed)])
    delayed = [r for r in records if r.action == "delayed" or (not r.action and _is_4xx(r))]
    if delayed:
        return _delayed([_dsn_detail(record, text) for record in _unique(delayed)])
    if records:
        return no_bounce()  # only "delivered" or "relayed": a receipt
    return None


def _report_in_plain_text(text: str, root: Message | None) -> list[DsnRecipient]:
    """A report pasted into a single-part bounce (MTAs without MIME write the fields into the text): the
    recipient blocks from its first `Reporting-MTA:` line on."""
    if root is not None and root.is_multipart():
        return []
    match = _PASTED_REPORT.search(text[:_MAX_UNSPLIT_BYTES])
    return read_delivery_status(text[match.start() :]).recipients if match else []


def _named_in(explanation: str, addresses: list[str]) -> list[str]:
    """flufl.bounce's addresses that the bounce's own words name; all of them when its words name none
    (flufl also reads the returned message's headers, whose addresses did not fail). One pass over the
    words, however many addresses flufl found."""
    in_words = {found.strip(".").lower() for found in _ADDRESS.findall(explanation)}
    named = [address for address in addresses if address in in_words]
    return named or addresses


def _result(kind: str, details: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "is_bounce": True,
        "type": kind,
        "recipients": [detail["email"] for detail in details],
        "recipients_detail": details,
    }


def _delayed(details: list[dict[str, Any]]) -> dict[str, Any]:
    """A delay notice: not a bounce, nobody has failed yet; the details say who is waiting."""
    return {"is_bounce": False, "type": "delayed", "recipients": [], "recipients_detail": details}


def _dsn_detail(record: DsnRecipient, text: str) -> dict[str, Any]:
    action = "delayed" if record.action == "delayed" or (not record.action and _is_4xx(record)) else "failed"
    kind, reason = classify_failure(record.status, record.diagnostic, action=action)
    if reason == "other" or not record.diagnostic:
        reason = failure_reason(record.status, f"{record.diagnostic}\n{explanation_text(text)}")
    return {"email": record.email, "status": record.status, "kind": kind, "reason": reason}


def _text_detail(email: str, context: str, explanation: str, *, action: str = "failed") -> dict[str, Any]:
    status = status_code(context) or status_code(explanation)
    kind, reason = classify_failure(status, context, action=action)
    if reason == "other" or not context:
        reason = failure_reason(status, f"{context}\n{explanation}")
    return {"email": email, "status": status, "kind": kind, "reason": reason}


def _feedback_report(parts: list[Message]) -> dict[str, Any]:
    """An ARF abuse complaint (RFC 5965), even when it is not wrapped in a multipart/report: not a bounce;
    its recipients are the `Original-Rcpt-To` addresses the complaint is about."""
    found: list[str] = []
    for part in parts:
        for match in _ORIGINAL_RCPT_TO.finditer(_report_text(part)):
            address = address_of(match.group(1))
            if address and address.lower() not in found and len(found) < _MAX_HEADER_ADDRESSES:
                found.append(address.lower())
    return {**no_bounce(), "type": "feedback_report", "recipients": found}


def _ses_notification(header_lines: Sequence[Sequence[str]], text: str) -> SesNotification | None:
    """Amazon SES's JSON notification, only in a message that SNS or SES sent (a person quoting such JSON
    in a support request is no bounce)."""
    sender = _first(header_lines, "from") or ""
    if _first(header_lines, _SNS_MESSAGE_ID_HEADER) is None and not _AMAZON_SENDER.search(sender):
        return None
    return read_ses_notification(text)


def _microsoft_complaint(root: Message | None) -> list[str] | None:
    """Outlook.com's complaint feed (JMRP) is no ARF: a multipart/mixed holding the complained-about message,
    which carries `X-HmXmrOriginalRecipient` (the user who complained). None when it is not one."""
    if root is None or not root.is_multipart():
        return None
    for child in [c for c in root.get_payload() if isinstance(c, Message)][:_MAX_COMPLAINT_PARTS]:
        inner = child.get_payload() if child.get_content_type() == "message/rfc822" else None
        if isinstance(inner, list) and inner and isinstance(inner[0], Message):
            recipient = inner[0].get(_COMPLAINT_RECIPIENT_HEADER)
            if recipient is not None:
                address = address_of(str(recipient)[:_MAX_COMPLAINT_HEADER_CHARS])
                return [address.lower()] if address else []
    return None


def _report_parts(root: Message | None, types: frozenset[str] = _REPORT_TYPES) -> Iterator[Message]:
    """Report parts of the given types, not descending into returned messages (their reports are old
    news)."""
    if root is None:
        return
    stack: list[tuple[Message, int]] = [(root, 0)]
    while stack:
        part, depth = stack.pop()
        content_type = part.get_content_type()
        if content_type in types:
            yield part
        elif part.is_multipart() and not content_type.startswith("message/") and depth < MAX_DEPTH:
            children = [child for child in part.get_payload() if isinstance(child, Message)]
            stack.extend((child, depth + 1) for child in reversed(children))


def _unsplit_body(root: Message | None) -> str | None:
    """The body of a multipart whose boundary could not be used (a mangled Content-Type), as text."""
    if root is None or root.is_multipart() or root.get_content_maintype() != "multipart":
        return None
    return decode_bytes(part_bytes(root)[:_MAX_UNSPLIT_BYTES], None)


def _reports_in_unsplit_body(body: str) -> list[str]:
    """The delivery-status block(s) of an unsplit report: the text after its part header."""
    match = _REPORT_PART_HEADER.search(body)
    return [body[match.end() : match.end() + _MAX_REPORT_BYTES]] if match else []


def _report_text(part: Message) -> str:
    return decode_bytes(part_bytes(part)[:_MAX_REPORT_BYTES], part.get_content_charset())


def _flufl(root: Message | None) -> tuple[list[str], list[str]]:
    """flufl.bounce's (temporary, permanent) failed addresses, lower-case; ([], []) when it fails."""
    if root is None or not _small_enough_for_flufl(root):
        return [], []
    try:
        temporary, permanent = all_failures(root)
    except Exception:  # a third-party reader on hostile input: its failure must not cost the ticket
        log.debug("flufl.bounce failed on a bounce candidate", exc_info=True)
        return [], []
    return _decoded_addresses(temporary), _decoded_addresses(permanent)


def _small_enough_for_flufl(root: Message) -> bool:
    """flufl.bounce walks every part for each of its detectors, and every line of every part for some:
    only messages of a few parts and a bounded size are given to it (real bounces are both)."""
    size = 0
    for count, part in enumerate(root.walk()):
        if count >= MAX_FLUFL_PARTS:
            return False
        payload = part.get_payload()
        size += len(payload) if isinstance(payload, str) else 0
        if size > MAX_FLUFL_CHARS:
            return False
    return True


def _decoded_addresses(found: Any) -> list[str]:
    addresses = (a.decode("utf-8", "replace") if isinstance(a, bytes) else str(a) for a in found)
    found = {address.strip("<>").lower() for address in addresses}
    return sorted(a for a in found if "@" in a and not a.startswith("@"))  # "@host" is no mailbox


def _first(header_lines: Sequence[Sequence[str]], name: str) -> str | None:
    return next(
        (str(line[1]) for line in header_lines if len(line) == 2 and str(line[0]).lower() == name), None
    )


def _header_addresses(value: str | None) -> list[str]:
    found = _ADDRESS.findall(value or "")[:_MAX_HEADER_ADDRESSES]
    return list(dict.fromkeys(address.strip(".") for address in found))


def _own_addresses(sender: str, mail_from: str) -> frozenset[str]:
    """The bounce's own sender addresses: never a failed recipient."""
    return frozenset(address.lower() for address in _ADDRESS.findall(f"{sender} {mail_from}"))


def _unique(records: list[DsnRecipient]) -> list[DsnRecipient]:
    seen: dict[str, DsnRecipient] = {}
    for record in records:
        seen.setdefault(record.email.lower(), record)
    return list(seen.values())


def _is_5xx(record: DsnRecipient) -> bool:
    return (record.status or "").startswith("5")


def _is_4xx(record: DsnRecipient) -> bool:
    return (record.status or "").startswith("4")
