"""Header fields of the top-level message: the ordered list for the ticket, and the parsed values of the
address, message-id and date fields.

Addresses and dates are interpreted by mail-parser's hardened RFC 5322 readers; the standard library is
the fallback when mail-parser finds nothing usable in a field that has content. The everyday address
shapes (`Name <user@example.com>`, a bare address) are read by one regular expression first: they are
most of the traffic and need none of mail-parser's recovery, which costs tens of microseconds each.
"""

from __future__ import annotations

import datetime
import logging
import re
from dataclasses import dataclass, field
from email.message import Message
from email.utils import getaddresses, parsedate_to_datetime
from typing import TypedDict

from mailparser.dates import parse_mail_date
from mailparser.utils import get_addresses

from inbound.ticket.mime_text import clean_header_text, decode_encoded_words, header_str, scrub_surrogates

log = logging.getLogger("postroom.normalize")

# Address parsing costs tens of microseconds per mailbox; a To: header of 10 MB must not take minutes.
MAX_ADDRESS_FIELD_CHARS = 64 * 1024
# RFC 5322 section 3.6.4: when References grows too long, keep the first id and the most recent ones.
MAX_REFERENCES = 500
MAX_MAILBOXES = 1000  # per address list (to, cc, reply_to)
MAX_DISPLAY_NAME_CHARS = 1024
_MESSAGE_ID = re.compile(r"<([^<>]*)>")
# What the ticket calls an email address: something@domain, no brackets or control characters, no
# whitespace in the domain. Local-only names ("MAILER-DAEMON") and garbage are not addresses.
_PLAUSIBLE_ADDRESS = re.compile(r"[^<>\x00-\x1f]+@[^<>@\s]+")
_ATOM = r"[A-Za-z0-9!#$%&'*+/^_`{|}~-]+"
_DOT_ATOM_ADDRESS = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
# One list item, stripped, in an everyday shape: ASCII, no comments, groups, escapes or encoded-words.
# Display-name words are separated by single spaces and only one `\s*` is left in the pattern, so no run
# of spaces can make the match backtrack quadratically.
_SIMPLE_MAILBOX = re.compile(
    rf"(?:\"(?P<quoted>[^\"\\\r\n,]*)\"|(?P<atoms>{_ATOM}(?: {_ATOM})*))?\s*<(?P<angled>{_DOT_ATOM_ADDRESS})>"
    rf"|(?P<bare>{_DOT_ATOM_ADDRESS})"
)
_NOT_SIMPLE = re.compile(r"[()\\:;]|=\?")


class Mailbox(TypedDict):
    name: str | None
    email: str


@dataclass
class HeaderFields:
    """The top-level header section, read once.

    `ordered` holds (name, decoded value) in message order for the ticket; `unfolded` holds values by
    lower-case name with encoded-words still in place, which the address parser needs to see.
    """

    ordered: list[list[str]] = field(default_factory=list)
    unfolded: dict[str, list[str]] = field(default_factory=dict)
    decoded: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def read(cls, message: Message) -> HeaderFields:
        fields = cls()
        for raw_name, raw_value in message.raw_items():
            name = clean_header_text(scrub_surrogates(str(raw_name)))
            unfolded = clean_header_text(header_str(str(raw_value)))
            decoded = clean_header_text(decode_encoded_words(unfolded))
            key = name.lower()
            fields.ordered.append([name, decoded])
            fields.unfolded.setdefault(key, []).append(unfolded)
            fields.decoded.setdefault(key, []).append(decoded)
        return fields

    def first(self, name: str) -> str | None:
        """The decoded value of the first `name` field, or None when absent."""
        values = self.decoded.get(name)
        return values[0] if values else None

    def first_unfolded(self, name: str) -> str | None:
        """The first `name` field as unfolded Unicode, encoded-words left in place."""
        values = self.unfolded.get(name)
        return values[0] if values else None

    def has(self, name: str) -> bool:
        return name in self.decoded

    def lines(self) -> list[tuple[str, str]]:
        """The header fields as (name, decoded value) pairs in message order: what classification reads."""
        return [(name, value) for name, value in self.ordered]

    def display_name_only(self, name: str) -> Mailbox | None:
        """`{"name": ..., "email": ""}` for a `name` field that names a person but gives no address
        ("From: Bob Smith"), else None."""
        value = self.first(name)
        if not value or "@" in value:
            return None
        display = value.split("<", 1)[0].strip().strip('"').strip()[:MAX_DISPLAY_NAME_CHARS]
        return {"name": display, "email": ""} if any(ch.isalnum() for ch in display) else None

    def mailboxes(self, name: str) -> list[Mailbox]:
        """Every mailbox in every `name` field (a group's members included), in order."""
        found: list[Mailbox] = []
        budget = MAX_ADDRESS_FIELD_CHARS  # over all `name` fields: a hundred huge To: fields cost one
        for value in self.unfolded.get(name, []):
            if budget <= 0 or len(found) >= MAX_MAILBOXES:
                break
            found.extend(parse_mailboxes(value, limit=budget))
            budget -= len(value)
        return found[:MAX_MAILBOXES]


def parse_mailboxes(value: str, *, limit: int = MAX_ADDRESS_FIELD_CHARS) -> list[Mailbox]:
    """The mailboxes of one address field value (unfolded, encoded-words in place), read from its first
    `limit` characters (cut at a comma)."""
    if len(value) > limit:
        value = value[:limit].rsplit(",", 1)[0]
    if not value.strip():
        return []
    pairs = _simple_mailboxes(value)
    if pairs is None:
        pairs = _mail_parser_mailboxes(value)
    if not pairs:
        pairs = [(decode_encoded_words(name), address) for name, address in getaddresses([value]) if address]
    mailboxes = (_mailbox(name, address) for name, address in pairs)
    return [mailbox for mailbox in mailboxes if _PLAUSIBLE_ADDRESS.fullmatch(mailbox["email"])]


def _mail_parser_mailboxes(value: str) -> list[tuple[str, str]]:
    try:
        return [(name, address) for name, address in get_addresses(value, decode_names=True) if address]
    except Exception:  # hostile input can still trip it (e.g. undecodable encoded-words): fall back
        log.debug("mail-parser could not read an address field; using the standard library", exc_info=True)
        return []


def _simple_mailboxes(value: str) -> list[tuple[str, str]] | None:
    """(name, address) pairs when every item of `value` has an everyday shape, else None."""
    if _NOT_SIMPLE.search(value):
        return None
    pairs = []
    for item in value.split(","):
        match = _SIMPLE_MAILBOX.fullmatch(item.strip())
        if match is None:
            return None
        name = match["quoted"] or match["atoms"] or ""
        pairs.append((name, match["angled"] or match["bare"]))
    return pairs


def _mailbox(name: str, address: str) -> Mailbox:
    # Encoded-words inside a quoted display name are not to be decoded by RFC 2047, yet many clients send
    # them; showing "=?utf-8?q?...?=" to an agent helps nobody.
    display = decode_encoded_words(name).strip().strip('"').strip() if name else ""
    email = address.strip().removeprefix("<").removesuffix(">").strip()
    return {
        "name": clean_header_text(scrub_surrogates(display)).strip() or None,
        "email": scrub_surrogates(email),
    }


def message_ids(value: str | None) -> list[str]:
    """Message-ids in a Message-ID / In-Reply-To / References value, without angle brackets."""
    if not value:
        return []
    ids = [found.strip() for found in _MESSAGE_ID.findall(value) if found.strip()]
    if not ids:  # some clients omit the brackets
        tokens = (token.strip("<>") for token in value.split())
        ids = [token for token in tokens if token and "<" not in token and ">" not in token]
    unique = list(dict.fromkeys(ids))
    if len(unique) > MAX_REFERENCES:
        unique = unique[:1] + unique[-(MAX_REFERENCES - 1) :]
    return unique


def first_message_id(value: str | None) -> str | None:
    ids = message_ids(value)
    return ids[0] if ids else None


def iso_date(value: str | None) -> str | None:
    """A Date field as ISO 8601 UTC ("2026-11-02T09:00:00Z"), or None when absent or unreadable."""
    if not value:
        return None
    try:
        moment: datetime.datetime | None = parse_mail_date(value).value
    except Exception:  # mail-parser is the first reader, not the only one
        log.debug("mail-parser could not read a date; using the standard library", exc_info=True)
        moment = None
    if moment is None:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)  # "-0000": zone unknown, read as UTC
    try:
        utc = moment.astimezone(datetime.UTC)
    except (OverflowError, ValueError):
        return None
    return utc.replace(tzinfo=None).isoformat(timespec="seconds") + "Z"
