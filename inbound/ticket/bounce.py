"""Is this message a bounce, and which recipients failed?

Standard delivery-status notifications (RFC 3464: multipart/report; report-type=delivery-status) are read
field by field. Older MTAs (qmail, Exim without DSN, Exchange NDRs) send plain text from MAILER-DAEMON or
postmaster; those are recognised by sender and subject, and their failed addresses are read from the lines
that follow a "could not be delivered" sentence, or from "<address>:" lines.
"""

from __future__ import annotations

import re
from email.message import Message
from typing import Any

from inbound.ticket.mime_text import decode_bytes, header_str
from inbound.ticket.mime_tree import part_bytes

_DAEMON_LOCAL_PARTS = frozenset({"mailer-daemon", "mailerdaemon", "mail-daemon", "postmaster"})
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|delivery (?:status notification \(fail|fail|has failed|problem)|returned mail"
    r"|mail delivery (?:failed|subsystem)|failure notice|could not be delivered|non-?delivery",
    re.IGNORECASE,
)
_FAILED_INTRODUCTION = re.compile(
    r"fail|could not be delivered|couldn't be delivered|undeliverable|permanent error|unable to deliver",
    re.IGNORECASE,
)
_ADDRESS = r"[^\s<>@\"'(),;:\[\]]+@[^\s<>@\"'(),;:\[\]]+"
_ANGLED_ADDRESS_LINE = re.compile(rf"^\s*<({_ADDRESS})>:")  # qmail, Postfix without DSN
_ADDRESS_LINE = re.compile(rf"^\s*<?({_ADDRESS})>?(?:\s|$|:)")
_MAX_SCANNED_LINES = 300
_FAILED_STATUS_CLASS = "5"


def detect_bounce(
    delivery_reports: list[Message],
    *,
    sender: str | None,
    subject: str | None,
    mail_from: str,
    text: str | None,
) -> dict[str, Any]:
    """`{"is_bounce": bool, "recipients": [failed addresses]}` for the ticket."""
    if delivery_reports:
        return _from_delivery_reports(delivery_reports)
    if _looks_like_plain_bounce(sender, subject, mail_from):
        return {"is_bounce": True, "recipients": _failed_addresses_in_text(text or "")}
    return {"is_bounce": False, "recipients": []}


def _from_delivery_reports(reports: list[Message]) -> dict[str, Any]:
    failed: list[str] = []
    recipient_blocks = 0
    for report in reports:
        for block in _field_blocks(report)[1:]:  # the first block describes the reporting MTA
            recipient = _recipient(block)
            if recipient is None:
                continue
            recipient_blocks += 1
            action = block.get("action", "").lower()
            status = block.get("status", "").strip()
            if action == "failed" or (not action and status.startswith(_FAILED_STATUS_CLASS)):
                failed.append(recipient)
    # Reports saying only "delayed" or "delivered" are not bounces; a report naming nobody is treated
    # as one, since it cannot be shown to be anything else.
    return {"is_bounce": bool(failed) or recipient_blocks == 0, "recipients": list(dict.fromkeys(failed))}


def _field_blocks(report: Message) -> list[dict[str, str]]:
    """The report's blocks of "Name: value" fields; names lower-case."""
    if report.is_multipart():  # parsed into one header block per message
        return [
            {str(name).lower(): header_str(str(value)) for name, value in block.raw_items()}
            for block in report.get_payload()
            if isinstance(block, Message)
        ]
    blocks: list[dict[str, str]] = []
    for chunk in re.split(r"\n[ \t]*\n", decode_bytes(part_bytes(report), None).replace("\r\n", "\n")):
        fields: dict[str, str] = {}
        for line in chunk.replace("\n ", " ").replace("\n\t", " ").split("\n"):
            name, colon, value = line.partition(":")
            if colon:
                fields.setdefault(name.strip().lower(), value.strip())
        if fields:
            blocks.append(fields)
    return blocks


def _recipient(block: dict[str, str]) -> str | None:
    value = block.get("final-recipient") or block.get("original-recipient")
    if not value:
        return None
    address = value.rpartition(";")[2].strip().removeprefix("<").removesuffix(">").strip()
    return address or None


def _looks_like_plain_bounce(sender: str | None, subject: str | None, mail_from: str) -> bool:
    local_part = (sender or "").rpartition("@")[0] or (sender or "")
    from_daemon = local_part.lower() in _DAEMON_LOCAL_PARTS or mail_from.strip() in ("", "<>")
    return from_daemon and bool(_BOUNCE_SUBJECT.search(subject or ""))


def _failed_addresses_in_text(text: str) -> list[str]:
    """Addresses on "<address>:" lines, and those listed after a sentence announcing failed recipients.

    A list runs until the first unindented line that is not an address (indented lines are details).
    """
    found: list[str] = []
    collecting = False
    for line in text.split("\n", _MAX_SCANNED_LINES)[:_MAX_SCANNED_LINES]:
        match = _ANGLED_ADDRESS_LINE.match(line) or (_ADDRESS_LINE.match(line) if collecting else None)
        if match:
            found.append(match.group(1))
            continue
        if collecting and line.strip() and not line[0].isspace():
            collecting = False
        if _FAILED_INTRODUCTION.search(line):
            collecting = True
    return list(dict.fromkeys(address.rstrip(".") for address in found))
