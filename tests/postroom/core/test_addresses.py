"""The strict address parser decisions rest on (CVE-2023-27043: never what getaddresses guesses)."""

from __future__ import annotations

import pytest

from postroom.core.addresses import Mailbox, is_dot_atom, parse_mailbox_list, split_mailbox


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Alice <alice@ok.example>", ["alice@ok.example"]),
        ("alice@OK.Example", ["alice@ok.example"]),
        ('"Doe, Jane" <jane@ok.example>, bob@ok.example', ["jane@ok.example", "bob@ok.example"]),
        ("Ada (Support) <ada@x.example>", ["ada@x.example"]),
        ("=?utf-8?q?Ad=C3=A9?= <a@x.example>", ["a@x.example"]),
        ('"alice@ok.example" <bob@evil.example>', ["bob@evil.example"]),  # the display name is no address
        ("Jöhn <jöhn@exämple.de>", ["jöhn@exämple.de"]),
        ("Ada\r\n <ada@x.example>", ["ada@x.example"]),  # folded
    ],
)
def test_plain_from_values_parse(value: str, expected: list[str]) -> None:
    mailboxes = parse_mailbox_list(value)
    assert mailboxes is not None and [str(m) for m in mailboxes] == expected


@pytest.mark.parametrize(
    "value",
    [
        "alice@example.org)<bob@example.org>",  # the CVE-2023-27043 report: 3.11.7 says alice
        "alice@example.org <bob@example.com>",
        "a <b@c.example> trailing",
        "undisclosed-recipients:;",
        "Group: a@b.example;",
        "x <a@b.example",
        "x a@b.example>",
        "<<a@b.example>>",
        "a@b.example,",
        ",a@b.example",
        "a@[192.0.2.1]",
        "<@relay.example:a@b.example>",
        '"unterminated <a@b.example>',
        "(unbalanced <a@b.example>",
        "a@b.example\r\nBcc: c@d.example",
        "a@b.example\0",
        "a.@b.example",
        "a@localhost",
        "",
        "a" * 20_000 + "@b.example",
    ],
)
def test_doubtful_from_values_are_refused(value: str) -> None:
    assert parse_mailbox_list(value) is None


def test_envelope_mailboxes() -> None:
    assert split_mailbox("Ada@Example.ORG") == Mailbox("Ada", "example.org")
    assert split_mailbox('"a b"@x.example') == Mailbox('"a b"', "x.example")
    assert split_mailbox('"a b"@x.example', allow_quoted=False) is None
    for bad in ("a@[1.2.3.4]", "@relay:a@x.example", "a@x", "a@-x.example", "a@x..example", "a@b@c.example"):
        assert split_mailbox(bad) is None, bad
    assert split_mailbox("a" * 65 + "@x.example") is None
    assert is_dot_atom("a.b+c") and not is_dot_atom('"a"') and not is_dot_atom("a..b")
