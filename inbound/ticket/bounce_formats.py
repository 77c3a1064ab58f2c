"""Failed recipients in the human-readable text of bounces that carry no (usable) RFC 3464 report.

Each MTA words it differently; the shapes recognised, each tested with a sample:
- qmail, Postfix without DSN, Yahoo: a line "<address>:" followed by the remote server's words;
- Exim, Gmail, Exchange/Office 365, GroupWise, Lotus Notes, Sendmail: a sentence announcing failed
  recipients ("could not be delivered to one or more of its recipients", "Delivery has failed to these
  recipients", "was not delivered to:", "The following addresses had permanent fatal errors") followed by
  a list of addresses, one a line, indented detail lines in between;
- a sentence or label naming the address inline: "Your message to a@example.com couldn't be delivered",
  "Intended recipient: a@example.com", "Delivery failed 20 attempts: a@example.com", Exchange's X.400
  "...;dda:SMTP=a@example.com", Exim's "(generated from a@example.com)",
  "Your message wasn't delivered to a@example.com", "delivery to a@example.com failed",
  "RCPT TO:<a@example.com>", "Original-Recipient: rfc822;a@example.com" pasted into the text.
Failing all of these, a bounce whose own words name one or two addresses (not its own, not a header line of
the original) names the failed ones. Reading stops at the copy of the returned message (its own headers
name addresses that did not fail) and after `MAX_SCANNED_LINES` lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_SCANNED_LINES = 400
MAX_LINE_CHARS = 1_000
MAX_RECIPIENTS = 100
_CONTEXT_LINES = 6

_ADDRESS = r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+"
_ANGLED_ADDRESS_LINE = re.compile(rf"^\s*<({_ADDRESS})>\s*(?::|\.\.\.|$)")
_ADDRESS_LINE = re.compile(
    rf"^\s*(?:[\"'][^\"']*[\"']\s*)?[<(\"']?(?:mailto:)?({_ADDRESS})[>)\"']?(?:\s|$|:|,|\.\.\.|;)"
)
_INLINE = re.compile(
    rf"(?:your\s+message\s+to\s+<?({_ADDRESS})>?\s+(?:could\s?n[o']?t|was\s?n[o']?t|could\s+not|has\s+not|was\s+not"
    r"|was\s+(?:automatically\s+)?rejected|has\s+been\s+rejected|failed|bounced)"
    rf"|\bSMTP=({_ADDRESS})"
    rf"|delivery\s+failed\b[^:\n]{{0,80}}:\s*<?({_ADDRESS})>?"
    rf"|^\s*(?:intended|original|failed|final|invalid|unknown)\s+recipient(?:\s+address)?:\s*<?({_ADDRESS})>?"
    rf"|\(generated\s+from\s+<?({_ADDRESS})>?\)"
    rf"|(?:was\s?n[o']?t|was\s+not|could\s?n[o']?t\s+be|could\s+not\s+be)\s+delivered\s+to\s+<?({_ADDRESS})>?"
    rf"|deliver(?:y|ing)\s+(?:to|of\s+mail\s+to)\s+<?({_ADDRESS})>?\s+(?:has\s+)?failed"
    rf"|rcpt\s+to:?\s*<({_ADDRESS})>"
    rf"|(?:original|final)-recipient:\s*rfc822;\s*<?({_ADDRESS})>?"
    rf"|^\s*recipient\s+address:\s*<?({_ADDRESS})>?"
    rf"|unable\s+to\s+deliver\s+(?:your\s+)?(?:message|mail)\s+to\s+<?({_ADDRESS})>?"
    rf"|<({_ADDRESS})>\s*\.\.\.\s*(?:user|mailbox|no\s|unknown|deferred|host)"
    rf"|^\s*({_ADDRESS})\s*\.\.\.\s*(?:user|mailbox|no\s|unknown|deferred|host))",
    re.IGNORECASE,
)
_INTRODUCTION = re.compile(
    r"fail|could\s?n[o']?t\s+be\s+(?:delivered|reached)|undeliver|permanent\s+(?:error|fatal)|unable\s+to\s+deliver"
    r"|not\s+(?:be\s+)?delivered\s+to|following\s+(?:address|recipient|user)|recipients?\s+(?:of|could)"
    r"|delivery\s+(?:to\s+the\s+following|problem|error)|invalid\s+(?:address|recipient)|did\s+not\s+reach"
    r"|unknown\s+(?:user|recipient)|rejected|error",
    re.IGNORECASE,
)
# Where the returned message (or its headers) begins in a plain-text bounce.
_RETURNED_MESSAGE = re.compile(
    r"^\s*(?:-+\s*)?(?:(?:a\s+)?copy\s+of\s+(?:the|your)\s+(?:original\s+)?message|original\s+message"
    r"|the\s+original\s+message\s+(?:was|is)|returned\s+(?:mail|message)\s+follows|undelivered\s+message"
    r"|(?:below\s+)?this\s+line\s+is\s+a\s+copy|message\s+headers?\s+follows?|unsent\s+message\s+below"
    r"|original\s+message\s+headers?|headers\s+of\s+your\s+(?:original\s+)?message)",
    re.IGNORECASE,
)
_ANY_ADDRESS = re.compile(_ADDRESS)
_DAEMON_PREFIXES = ("mailer-daemon@", "postmaster@", "mail-daemon@", "mailerdaemon@")
_MAX_LONE_ADDRESSES = 2
# A header line of the returned message; Zoho writes them without a space after the colon ("Received:from").
_HEADER_LINE = re.compile(
    r"^(?:Received|Return-Path|Message-ID|From|To|Date|Subject|Cc):(?:\s|(?=\S))", re.IGNORECASE
)
_HEADER_BLOCK_WINDOW = 12


@dataclass(frozen=True)
class TextFailure:
    email: str
    context: str  # the lines around the address: the remote server's words, for the reason


def failed_recipients_in_text(text: str, *, ignore: frozenset[str] = frozenset()) -> list[TextFailure]:
    """Failed addresses in a bounce's explanation text, in order, without duplicates or `ignore`d ones."""
    lines = [line[:MAX_LINE_CHARS] for line in _explanation(text)]
    found: dict[str, int] = {}
    collecting = False
    for index, line in enumerate(lines):
        addresses = _inline_addresses(line)
        match = _ANGLED_ADDRESS_LINE.match(line) or (_ADDRESS_LINE.match(line) if collecting else None)
        if match:
            addresses.append(match.group(1))
        for address in addresses:
            key = address.lower().rstrip(".")
            if key not in ignore and key not in found and len(found) < MAX_RECIPIENTS:
                found[key] = index
        if match:
            continue
        if collecting and line.strip() and not line[0].isspace() and not _INTRODUCTION.search(line):
            collecting = False
        if _INTRODUCTION.search(line):
            collecting = True
    if not found:  # no known shape: a bounce that names one or two addresses in its own words names them
        found = _lone_addresses(lines, ignore)
    return [
        TextFailure(email=_original_case(lines[index], key), context=_context(lines, index))
        for key, index in found.items()
    ]


def _lone_addresses(lines: list[str], ignore: frozenset[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for index, line in enumerate(lines):
        if _HEADER_LINE.match(line.lstrip()):
            continue  # a quoted original "To:" names who was written to, not who failed
        for match in _ANY_ADDRESS.finditer(line):
            key = match.group(0).lower().rstrip(".")
            if key not in ignore and not key.startswith(_DAEMON_PREFIXES):
                found.setdefault(key, index)
    return found if 0 < len(found) <= _MAX_LONE_ADDRESSES else {}


def explanation_text(text: str) -> str:
    """The bounce's own words: the text before the returned message."""
    return "\n".join(_explanation(text))


def _explanation(text: str) -> list[str]:
    lines = text.split("\n", MAX_SCANNED_LINES)[:MAX_SCANNED_LINES]
    for index, line in enumerate(lines):
        if index > 2 and (_RETURNED_MESSAGE.match(line) or _starts_header_block(lines, index)):
            return lines[:index]
    return lines


def _starts_header_block(lines: list[str], index: int) -> bool:
    """Three header lines in a row (folded continuation lines between them allowed): the returned
    message's headers pasted into the text."""
    if not _HEADER_LINE.match(lines[index].lstrip()):
        return False
    headers = 0
    for line in lines[index : index + _HEADER_BLOCK_WINDOW]:
        if _HEADER_LINE.match(line.lstrip()):
            headers += 1
            if headers == 3:
                return True
        elif not line[:1].isspace():
            return False
    return False


def _inline_addresses(line: str) -> list[str]:
    return [next(group for group in match.groups() if group) for match in _INLINE.finditer(line)]


def _context(lines: list[str], index: int) -> str:
    return "\n".join(lines[index : index + _CONTEXT_LINES])


def _original_case(line: str, key: str) -> str:
    start = line.lower().find(key)
    return line[start : start + len(key)] if start >= 0 else key
