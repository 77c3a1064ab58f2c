"""A bounded reader for RFC 3464 delivery-status reports (the `message/delivery-status` part of a DSN).

The body is a per-message block of "Name: value" fields, then one block per recipient, blocks separated by
blank lines. Hostile reports can hold millions of blocks, so the reader is one linear pass over at most
`MAX_REPORT_CHARS` characters that stops after `MAX_BLOCKS` blocks or `MAX_RECIPIENTS` recipient blocks,
whichever comes first; its work is proportional to the characters it reads, never to the report's size.

The address a recipient block is about is its `Original-Recipient` when present (the address the sender
used; `Final-Recipient` may be a forwarding target the sender never heard of), else `Final-Recipient`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_REPORT_CHARS = 256 * 1024
MAX_BLOCKS = 1_000
MAX_RECIPIENTS = 200
MAX_FIELD_CHARS = 2_000
_RECIPIENT_FIELDS = ("original-recipient", "final-recipient")
_KEPT_FIELDS = frozenset({*_RECIPIENT_FIELDS, "action", "status", "diagnostic-code", "remote-mta"})
_FIELD = re.compile(r"([!-9;-~]+)[ \t]*:[ \t]*(.*)")
_STATUS_CODE = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
# The enhanced code inside an SMTP reply ("550 5.1.1", "550-'5.2.2"): what the remote server itself said.
_REPLY_STATUS = re.compile(r"\b[245]\d\d[ -]['\"#]?([245]\.\d{1,3}\.\d{1,3})\b")
_ADDRESS = re.compile(r"[^\s<>\"'(),;:\[\]]+@[^\s<>\"'(),;:\[\]]+")


@dataclass(frozen=True)
class DsnRecipient:
    """One per-recipient block: the address, its action ("failed", "delayed", ...), RFC 3463 status and
    the remote server's diagnostic text ("" when absent)."""

    email: str
    action: str
    status: str | None
    diagnostic: str


@dataclass
class DsnReport:
    recipients: list[DsnRecipient]
    blocks_read: int  # how many field blocks were read: the reader's work, bounded by MAX_BLOCKS


def read_delivery_status(text: str) -> DsnReport:
    """The recipient blocks of a delivery-status body, in order, with the bounds of the module docstring."""
    recipients: list[DsnRecipient] = []
    fields: dict[str, str] = {}
    last_name: str | None = None
    blocks = 0
    in_block = False
    for line in _lines(text[:MAX_REPORT_CHARS]):
        if not line.strip():
            if in_block:
                blocks += 1
                _add_recipient(fields, recipients)
                if blocks >= MAX_BLOCKS or len(recipients) >= MAX_RECIPIENTS:
                    return DsnReport(recipients, blocks)
            fields, last_name, in_block = {}, None, False
            continue
        in_block = True
        if line[0] in " \t":  # a folded continuation of the previous field
            if last_name is not None and len(fields[last_name]) < MAX_FIELD_CHARS:
                fields[last_name] = f"{fields[last_name]} {line.strip()}"
            continue
        match = _FIELD.match(line)
        if match is None:
            last_name = None
            continue
        name = match.group(1).lower()
        last_name = name if name in _KEPT_FIELDS and name not in fields else None
        if last_name is not None:
            fields[name] = match.group(2).strip()[:MAX_FIELD_CHARS]
    if in_block:
        blocks += 1
        _add_recipient(fields, recipients)
    return DsnReport(recipients, blocks)


def _lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _add_recipient(fields: dict[str, str], recipients: list[DsnRecipient]) -> None:
    email = next((e for e in (address_of(fields.get(name, "")) for name in _RECIPIENT_FIELDS) if e), None)
    if email is None:
        return
    diagnostic = fields.get("diagnostic-code", "")
    recipients.append(
        DsnRecipient(
            email=email,
            action=_action(fields.get("action", "")),
            status=_recipient_status(status_code(fields.get("status", "")), diagnostic),
            diagnostic=diagnostic,
        )
    )


def _recipient_status(status: str | None, diagnostic: str) -> str | None:
    """The Status field, unless it is the catch-all X.0.0 (Courier, Amazon SES and Google write 5.0.0 for
    every failure) and the server's reply in the diagnostic gives a precise code of the same class."""
    if status is not None and not status.endswith(".0.0"):
        return status
    match = _REPLY_STATUS.search(diagnostic[:MAX_FIELD_CHARS])
    if match and (status is None or match.group(1)[0] == status[0]):
        return match.group(1)
    return status or status_code(diagnostic)


def _action(value: str) -> str:
    """The action, lower-case; the "failure" and "delay" some MTAs write read as "failed" and "delayed"."""
    action = value.split()[0].lower() if value.split() else ""
    return {"failure": "failed", "fail": "failed", "delay": "delayed"}.get(action, action)


def address_of(value: str) -> str | None:
    """The address of a recipient field: "rfc822; <a@example.com>" -> "a@example.com"."""
    address_type, semicolon, address = value.partition(";")
    if not semicolon:
        address = address_type
    elif address_type.strip().lower() not in ("rfc822", "", "unknown"):
        match = _ADDRESS.search(address)  # "X400; ..." and the like rarely hold a mail address
        return match.group(0).strip(".") if match else None
    match = _ADDRESS.search(address)
    return match.group(0).strip(".") if match else None


def status_code(value: str) -> str | None:
    """The first RFC 3463 status code ("5.1.1") in `value`, or None."""
    match = _STATUS_CODE.search(value)
    return match.group(0) if match else None
