"""RFC 3464 delivery status notifications ("bounces") for recipients Postroom gave up on.

A DSN is a multipart/report (RFC 6522) with three parts: a human-readable explanation, a
message/delivery-status part (one per-message block, then one block per failed recipient with
Final-Recipient, Action, Status, Remote-MTA and Diagnostic-Code), and the original message's header as
text/rfc822-headers (the body is not returned: it may be large and is the sender's own anyway).

The message is written out byte by byte rather than through the email package: the original header is
quoted exactly, whatever bytes it holds, and every line ends in CRLF.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, formatdate, make_msgid

from postroom.core.header_values import header_value

_ENHANCED_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})\b")


@dataclass(frozen=True)
class FailedRecipient:
    rcpt: str
    status: str  # RFC 3463 enhanced status, e.g. "5.1.1"
    diagnostic: str  # the reason: a remote reply ("550 5.1.1 no such user") or Postroom's own
    remote_mta: str = ""  # the MX that answered, if any
    remote: bool = True  # diagnostic is an SMTP reply (diagnostic-type smtp), else Postroom's own


def enhanced_status(code: int, message: str, *, default: str | None = None) -> str:
    """The RFC 3463 status a reply carries (`550 5.7.1 ...` → 5.7.1), else derived from the reply code."""
    found = _ENHANCED_STATUS.match(message.strip())
    if found and found.group(1) == str(code)[0]:
        return found.group(0)
    return default or f"{str(code)[0]}.0.0"


@dataclass(frozen=True)
class DsnMessage:
    message_id: str
    raw: bytes


def build_dsn(
    *,
    reporting_mta: str,
    recipient: str,
    original_queue_id: str,
    original_raw: bytes,
    arrival: float,
    failures: Sequence[FailedRecipient],
    now: float,
) -> DsnMessage:
    """The DSN telling `recipient` (the original envelope sender) that `failures` were not delivered.

    HeaderInjection (a ValueError) when an address or host name would break a header line.
    """
    header_value(reporting_mta, "Reporting-MTA")
    header_value(recipient, "To")
    for failure in failures:
        header_value(failure.rcpt, "Final-Recipient")
        header_value(failure.remote_mta, "Remote-MTA")
    boundary = f"=_postroom_dsn_{secrets.token_hex(12)}"
    message_id = make_msgid(domain=reporting_mta)
    date = formatdate(now, localtime=False)
    header = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: <{recipient}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {date}",
        f"Message-ID: {message_id}",
        "Auto-Submitted: auto-replied",  # RFC 3834: never answered by auto-responders
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
    ]
    parts = [
        _part("text/plain; charset=utf-8", _human_text(reporting_mta, failures)),
        _part(
            "message/delivery-status",
            _status_fields(reporting_mta, original_queue_id, arrival, failures, now),
        ),
        _headers_part(original_raw),
    ]
    body = b"".join(b"--" + boundary.encode() + b"\r\n" + part for part in parts)
    raw = _lines(header) + body + b"--" + boundary.encode() + b"--\r\n"
    return DsnMessage(message_id, raw)


def _human_text(reporting_mta: str, failures: Sequence[FailedRecipient]) -> list[str]:
    lines = [
        f"This is the mail system at host {reporting_mta}.",
        "",
        "Your message could not be delivered to one or more recipients. It has been given up on;",
        "the reasons are below.",
        "",
    ]
    for failure in failures:
        lines.append(f"<{failure.rcpt}>: {_one_line(failure.diagnostic)}")
    return lines


def _status_fields(
    reporting_mta: str,
    queue_id: str,
    arrival: float,
    failures: Sequence[FailedRecipient],
    now: float,
) -> list[str]:
    lines = [
        f"Reporting-MTA: dns; {reporting_mta}",
        f"X-Postroom-Queue-ID: {queue_id}",
        f"Arrival-Date: {_date(arrival)}",
    ]
    for failure in failures:
        diagnostic_type = "smtp" if failure.remote else "x-postroom"
        lines += [
            "",
            f"Final-Recipient: rfc822; {failure.rcpt}",
            "Action: failed",
            f"Status: {failure.status}",
        ]
        if failure.remote_mta:
            lines.append(f"Remote-MTA: dns; {failure.remote_mta}")
        lines += [
            f"Diagnostic-Code: {diagnostic_type}; {_one_line(failure.diagnostic)}",
            f"Last-Attempt-Date: {_date(now)}",
        ]
    return lines


def _headers_part(original_raw: bytes) -> bytes:
    """The original header, exactly as received, as text/rfc822-headers."""
    end = re.search(rb"\r?\n\r?\n", original_raw)
    header = original_raw[: end.start()] if end else original_raw
    header = re.sub(rb"\r?\n", b"\r\n", header)
    encoding = b"7bit" if header.isascii() else b"8bit"
    head = b"Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: " + encoding + b"\r\n\r\n"
    return head + header + b"\r\n\r\n"


def _part(content_type: str, lines: list[str]) -> bytes:
    body = _lines(lines)
    encoding = "7bit" if body.isascii() else "8bit"  # 8bit only for non-ASCII addresses or replies
    return (
        _lines([f"Content-Type: {content_type}", f"Content-Transfer-Encoding: {encoding}", ""])
        + body
        + b"\r\n"
    )


def _lines(lines: list[str]) -> bytes:
    return "".join(f"{line}\r\n" for line in lines).encode()


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _date(timestamp: float) -> str:
    return format_datetime(datetime.fromtimestamp(timestamp, UTC))
