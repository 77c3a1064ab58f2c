from __future__ import annotations

import pytest
from mailparser.utils import get_addresses

from inbound.ticket.mail_headers import (
    MAX_REFERENCES,
    HeaderFields,
    first_message_id,
    iso_date,
    message_ids,
    parse_mailboxes,
)
from inbound.ticket.mime_tree import parse_header_section

EVERYDAY_ADDRESS_FIELDS = [
    "Alice Example <alice@example.com>",
    "alice@example.com",
    "<alice@example.com>",
    ' "Alice Example" <alice.example+tag@mail.example.com> ',
    "a@example.com, Bob <b@example.org>,c@example.net",
    "O'Brien <o.brien@example.ie>",
]


@pytest.mark.parametrize("value", EVERYDAY_ADDRESS_FIELDS)
def test_everyday_addresses_read_as_mail_parser_reads_them(value: str) -> None:
    expected = [
        {"name": name or None, "email": address}
        for name, address in get_addresses(value, decode_names=True)
        if address
    ]
    assert parse_mailboxes(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"Doe, John" <john@example.com>', [("Doe, John", "john@example.com")]),
        ("alice@example.com (Alice Example)", [("Alice Example", "alice@example.com")]),
        ("=?utf-8?q?Ren=C3=A9e?= <r@example.fr>", [("Renée", "r@example.fr")]),
        ('"=?utf-8?q?Quoted_Word?=" <q@example.com>', [("Quoted Word", "q@example.com")]),
        ("=?utf-8?B?w6?= <bad@example.com>", [("\ufffd", "bad@example.com")]),  # mail-parser raises here
        ("Team: kim@example.com, sam@example.com;", [(None, "kim@example.com"), (None, "sam@example.com")]),
        ("undisclosed-recipients:;", []),
        ("MAILER-DAEMON", []),  # not an address
        ("garbage <<>>", []),
        ("   ", []),
    ],
)
def test_parse_mailboxes(value: str, expected: list[tuple[str | None, str]]) -> None:
    assert [(m["name"], m["email"]) for m in parse_mailboxes(value)] == expected


def test_huge_address_fields_are_read_up_to_a_bound() -> None:
    value = ", ".join(f"user{i}@example.com" for i in range(20_000))
    mailboxes = parse_mailboxes(value)
    assert 1_000 < len(mailboxes) < 20_000
    assert mailboxes[-1]["email"] == f"user{len(mailboxes) - 1}@example.com"


def test_message_ids() -> None:
    assert message_ids("<a@x> <b@x>\r\n <a@x>") == ["a@x", "b@x"]
    assert message_ids("no-brackets@x other@x") == ["no-brackets@x", "other@x"]
    assert message_ids("<reply@x> (Alice's message of Mon)") == ["reply@x"]
    assert message_ids("<>  < >") == []
    assert message_ids(None) == []
    assert first_message_id("  <first@x> <second@x>") == "first@x"
    assert first_message_id("") is None


def test_long_references_keep_the_root_and_the_most_recent_ids() -> None:
    ids = message_ids(" ".join(f"<m{i}@x>" for i in range(2_000)))
    assert len(ids) == MAX_REFERENCES
    assert ids[0] == "m0@x"
    assert ids[1] == f"m{2_000 - MAX_REFERENCES + 1}@x"
    assert ids[-1] == "m1999@x"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 02 Nov 2026 10:15:00 +0100", "2026-11-02T09:15:00Z"),
        ("2 Nov 2026 10:15 -0500", "2026-11-02T15:15:00Z"),
        ("Mon, 02 Nov 2026 10:15:00 -0000", "2026-11-02T10:15:00Z"),
        ("Mon, 02 Nov 2026 10:15:00 EST", "2026-11-02T15:15:00Z"),
        ("Mon, 02 Nov 26 10:15:00 +0000 (UTC)", "2026-11-02T10:15:00Z"),
        ("Mon, 02 Nov 2026 10:15:00", "2026-11-02T10:15:00Z"),  # no zone: only the stdlib reads it
        ("Tue, 31 Feb 2026 10:00:00 +0000", None),
        ("yesterday", None),
        ("", None),
        (None, None),
    ],
)
def test_iso_date(value: str | None, expected: str | None) -> None:
    assert iso_date(value) == expected


def test_header_fields_keep_order_repeats_and_decoded_values() -> None:
    raw = (
        b"Received: from a\r\n by b\r\nReceived: from c\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        b"To: =?utf-8?q?Doe=2C_John?= <j@example.com>\r\nX-Raw: caf\xc3\xa9\r\n\r\n"
    )
    fields = HeaderFields.read(parse_header_section(raw))
    assert fields.ordered == [
        ["Received", "from a by b"],
        ["Received", "from c"],
        ["Subject", "Grüße"],
        ["To", "Doe, John <j@example.com>"],
        ["X-Raw", "café"],
    ]
    assert fields.first("subject") == "Grüße"
    assert fields.first("cc") is None
    assert fields.has("received") and not fields.has("cc")
    # Address parsing sees the encoded-word, so the comma it encodes does not split the name.
    assert fields.mailboxes("to") == [{"name": "Doe, John", "email": "j@example.com"}]
