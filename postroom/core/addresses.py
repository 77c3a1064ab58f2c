"""Strict address parsing for decisions: who may send as whom, which tenant a recipient is.

`email.utils.getaddresses`/`parseaddr` on the interpreters Postroom runs on (3.11 before 3.11.10 and 3.12
before 3.12.6) misparse crafted input (CVE-2023-27043): `alice@example.org)<bob@example.org>` yields
`alice@example.org`, while a mail client shows bob. A decision must never rest on a parse another program
reads differently, so this parser accepts only the unambiguous forms of RFC 5321 (envelope paths) and
RFC 5322 (a From: mailbox-list) and returns None for anything else — the caller refuses it.

Accepted: `local@domain` where local is a dot-atom (or, where allowed, a quoted string) and domain a host
name; in a header, `[display name] <local@domain>` or a bare `local@domain`, comma-separated, with comments.
Refused: address literals, source routes, groups, obsolete syntax, unbalanced quotes, brackets or comments,
control characters, and anything longer than RFC 5321's limits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_LOCAL = 64
MAX_DOMAIN = 255
MAX_PATH = 254
MAX_HEADER = 16 * 1024  # a From: value beyond this is not a sender, it is an attack
MAX_COMMENT_DEPTH = 8

# atext (RFC 5322 3.2.3) plus UTF-8 (RFC 6532), without the C1 controls and lone surrogates.
_UTF8 = r"\u00a0-\ud7ff\ue000-\U0010ffff"
_ATEXT = rf"[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~\-{_UTF8}]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = rf'"(?:[\x20\x21\x23-\x5b\x5d-\x7e{_UTF8}]|\\[\x20-\x7e])*"'
_LABEL = rf"[A-Za-z0-9{_UTF8}](?:[A-Za-z0-9\-{_UTF8}]{{0,61}}[A-Za-z0-9{_UTF8}])?"
_HOSTNAME = rf"{_LABEL}(?:\.{_LABEL})+"

DOT_ATOM = re.compile(_DOT_ATOM)
_MAILBOX = re.compile(rf"({_DOT_ATOM}|{_QUOTED})@({_HOSTNAME})")
_PHRASE = re.compile(rf"[ \t]*(?:(?:{_ATEXT}+|{_QUOTED}|\.)[ \t]*)*")
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_FOLD = re.compile(r"\r?\n(?=[ \t])")


@dataclass(frozen=True, slots=True)
class Mailbox:
    local: str  # as given (a quoted local part keeps its quotes)
    domain: str  # lowercased

    @property
    def quoted(self) -> bool:
        return self.local.startswith('"')

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


def is_dot_atom(text: str) -> bool:
    return DOT_ATOM.fullmatch(text) is not None


def split_mailbox(address: str, *, allow_quoted: bool = True) -> Mailbox | None:
    """An RFC 5321 Mailbox (`local@host.name`, no address literal), or None."""
    if len(address) > MAX_PATH:
        return None
    match = _MAILBOX.fullmatch(address)
    if match is None:
        return None
    local, domain = match[1], match[2]
    if len(local.encode("utf-8", "surrogatepass")) > MAX_LOCAL or len(domain) > MAX_DOMAIN:
        return None
    if local.startswith('"') and not allow_quoted:
        return None
    return Mailbox(local, domain.lower())


def parse_mailbox_list(value: str, *, allow_quoted: bool = True) -> list[Mailbox] | None:
    """The mailboxes of a From:-style header value (RFC 5322 mailbox-list), or None when any is doubtful."""
    if len(value) > MAX_HEADER:
        return None
    value = _FOLD.sub("", value)
    if _CONTROL.search(value):
        return None
    elements = _split_elements(value)
    if elements is None:
        return None
    mailboxes = []
    for element in elements:
        mailbox = _parse_element(element, allow_quoted)
        if mailbox is None:
            return None
        mailboxes.append(mailbox)
    return mailboxes or None


def _split_elements(value: str) -> list[str] | None:
    """Top-level comma-separated elements with comments blanked out; None when quotes, comments or angle
    brackets do not balance."""
    elements: list[str] = []
    current: list[str] = []
    depth = 0  # comment nesting
    in_quotes = in_angle = escaped = False
    for ch in value:
        if escaped:
            escaped = False
            current.append(ch if depth == 0 else " ")
            continue
        if ch == "\\" and (in_quotes or depth):
            escaped = True
            current.append(ch if depth == 0 else " ")
            continue
        if in_quotes:
            in_quotes = ch != '"'
            current.append(ch)
        elif ch == "(":
            depth += 1
            if depth > MAX_COMMENT_DEPTH:
                return None
            current.append(" ")
        elif ch == ")":
            if depth == 0:
                return None
            depth -= 1
            current.append(" ")
        elif depth:
            current.append(" ")
        elif ch == '"':
            in_quotes = True
            current.append(ch)
        elif ch == "<":
            if in_angle:
                return None
            in_angle = True
            current.append(ch)
        elif ch == ">":
            if not in_angle:
                return None
            in_angle = False
            current.append(ch)
        elif ch == "," and not in_angle:
            elements.append("".join(current))
            current = []
        else:
            current.append(ch)
    if in_quotes or depth or in_angle or escaped:
        return None
    elements.append("".join(current))
    return elements


def _parse_element(element: str, allow_quoted: bool) -> Mailbox | None:
    open_at = _outside_quotes(element, "<")
    if open_at < 0:
        return split_mailbox(element.strip(" \t"), allow_quoted=allow_quoted)
    close_at = element.find(">", open_at)
    name, address, tail = element[:open_at], element[open_at + 1 : close_at], element[close_at + 1 :]
    if tail.strip(" \t") or not _PHRASE.fullmatch(name):
        return None
    return split_mailbox(address, allow_quoted=allow_quoted)


def _outside_quotes(text: str, char: str) -> int:
    """Index of the first `char` outside a quoted string, or -1."""
    in_quotes = escaped = False
    for index, ch in enumerate(text):
        if escaped:
            escaped = False
        elif in_quotes and ch == "\\":
            escaped = True
        elif ch == '"':
            in_quotes = not in_quotes
        elif ch == char and not in_quotes:
            return index
    return -1
