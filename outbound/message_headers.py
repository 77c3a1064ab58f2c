"""Reading and completing the header of a submitted message, without re-serialising it.

Added fields are prepended as raw lines, so the body and every existing header stay byte-for-byte as the
client sent them (what it may already have signed or hashed stays valid, and nothing is re-folded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import format_datetime, make_msgid

from postroom.core.addresses import parse_mailbox_list

_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class CompletedMessage:
    raw: bytes
    message_id: str
    added: tuple[str, ...]  # names of the fields added, for the log


def header_block(raw: bytes) -> bytes:
    """The header section of `raw`, up to and including the empty line that ends it."""
    if raw.startswith((b"\r\n", b"\n")):
        return b""
    end = _HEADER_END.search(raw)
    return raw if end is None else raw[: end.end()]


def line_ending(raw: bytes) -> bytes:
    """The line ending the message uses (CRLF unless its first line ends in a bare LF)."""
    first = raw.find(b"\n")
    return b"\n" if first > 0 and raw[first - 1 : first] != b"\r" else b"\r\n"


def parse_headers(raw: bytes) -> Message:
    # compat32 keeps malformed fields as plain strings instead of raising: judging them is our job.
    return BytesHeaderParser(policy=compat32).parsebytes(header_block(raw))


def from_addresses(headers: Message) -> list[str]:
    """The addresses in From: (several are allowed by RFC 5322); a field the strict parser doubts yields ''.

    Not `email.utils.getaddresses`: it misparses crafted values on the interpreters we run on
    (CVE-2023-27043), and the sender check must read From: as a mail client will.
    """
    addresses: list[str] = []
    for value in headers.get_all("From", []):
        # No quoted local parts: `"ceo@bank.example"@our.domain` reads as the bank's address to a person.
        mailboxes = parse_mailbox_list(str(value), allow_quoted=False)
        addresses.extend([str(m) for m in mailboxes] if mailboxes is not None else [""])
    return addresses


def address_domain(address: str) -> str:
    """The domain of an address, lowercased without a trailing dot ('' when there is none)."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    return domain.rstrip(".").lower() if at and local else ""


def complete_message(raw: bytes, *, hostname: str, now: float, add_auto_submitted: bool) -> CompletedMessage:
    """Add Message-ID and Date when missing (RFC 6409 §8), and Auto-Submitted when asked and missing."""
    headers = parse_headers(raw)
    eol = line_ending(raw)
    message_id = str(headers.get("Message-ID", "")).strip()
    added: list[tuple[str, str]] = []
    if not message_id:
        message_id = make_msgid(domain=hostname)
        added.append(("Message-ID", message_id))
    if not str(headers.get("Date", "")).strip():
        added.append(("Date", format_datetime(datetime.fromtimestamp(now, UTC))))
    if add_auto_submitted and headers.get("Auto-Submitted") is None:
        added.append(("Auto-Submitted", "auto-generated"))
    prefix = b"".join(f"{name}: {value}".encode("ascii") + eol for name, value in added)
    return CompletedMessage(prefix + raw, message_id, tuple(name for name, _ in added))
