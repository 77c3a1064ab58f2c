"""Class 5 of issue 13: decoded header values and display names carry no control characters (tab aside)."""

from __future__ import annotations

import re

import pytest

from tests.inbound.ticket.hostile import HEAD, ticket

CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def test_an_encoded_word_cannot_inject_a_header_through_the_subject() -> None:
    result = ticket(HEAD + b"Subject: =?utf-8?q?hi=0D=0ABcc:_victim@x.com=00?=\r\n\r\nbody\r\n")
    assert result["subject"] == "hi Bcc: victim@x.com"
    assert ["Subject", "hi Bcc: victim@x.com"] in result["headers"]


@pytest.mark.parametrize(
    "subject",
    [
        b"=?utf-8?b?aGkNCkJjYzogdmljdGltQHguY29tAA==?=",  # the same in base64
        b"hi\r there",  # a lone-CR fold
        b"hi\n\tthere",  # a bare-LF fold
        b"=?iso-8859-1?q?=1B=5B31m=85red=7F?=",  # escape sequence, NEL, DEL
        b"tab\there",
    ],
)
def test_header_values_carry_no_control_characters(subject: bytes) -> None:
    result = ticket(HEAD + b"Subject: " + subject + b"\r\nX-Other: " + subject + b"\r\n\r\nbody\r\n")
    for name, value in result["headers"]:
        assert not CONTROL.search(name) and not CONTROL.search(value), (name, value)
    assert not CONTROL.search(result["subject"])
    assert result["subject"].strip()


def test_lone_cr_folds_are_unfolded() -> None:
    result = ticket(
        HEAD.replace(b"From: Alice", b"From: Alice\r Smith") + b"Subject: hi\r there\r\n\r\nx\r\n"
    )
    assert result["subject"] == "hi there"
    assert result["from"] == {"name": "Alice Smith", "email": "alice@example.com"}


@pytest.mark.parametrize(
    "from_field",
    [
        b"=?utf-8?q?Eve=0D=0ABcc=3A_x=40y.z?= <eve@example.com>",
        b'"Eve\x01\x02 =?utf-8?q?=00?=" <eve@example.com>',
        b"=?utf-8?b?RXZlDQo=?= <eve@example.com>",
    ],
)
def test_display_names_carry_no_control_characters(from_field: bytes) -> None:
    raw = b"From: " + from_field + b"\r\nTo: a@example.com, =?utf-8?q?Bob=0A?= <bob@example.com>\r\n\r\nx\r\n"
    result = ticket(raw)
    names = [result["from"]["name"]] + [mailbox["name"] for mailbox in result["to"]]
    assert all(name is None or not CONTROL.search(name) for name in names), names
    assert result["from"]["email"] == "eve@example.com"
