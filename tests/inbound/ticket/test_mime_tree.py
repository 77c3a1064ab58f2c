from __future__ import annotations

import email
from email.errors import MissingHeaderBodySeparatorDefect
from email.message import Message
from email.policy import compat32
from typing import Any

import pytest

from inbound.ticket.mime_tree import (
    MAX_DEPTH,
    MAX_PARTS,
    MimeNotes,
    parse_header_section,
    parse_mime,
    part_bytes,
    raw_header,
)
from tests.inbound.ticket.corpus import fixture_names, raw_fixture


def _shape(message: Message) -> list[Any]:
    """Everything the stdlib parser decides about a message, for comparison."""
    shape: list[Any] = [message.get_content_type(), list(message.raw_items()), message.get_unixfrom()]
    if message.is_multipart():
        # The stdlib sometimes leaves an empty epilogue as None; both mean "nothing".
        children = [_shape(part) for part in _parts(message)]
        shape += [message.preamble, message.epilogue or "", children]
    else:
        shape.append(message.get_payload())
    return shape


def _parts(message: Message) -> list[Message]:
    payload = message.get_payload()
    assert isinstance(payload, list)
    return [part for part in payload if isinstance(part, Message)]


def _child(message: Message, index: int) -> Message:
    return _parts(message)[index]


@pytest.mark.parametrize("name", [n for n in fixture_names() if n != "deep-nesting"])
def test_tree_matches_the_standard_library_parser(name: str) -> None:
    raw = raw_fixture(name)
    assert _shape(parse_mime(raw)) == _shape(email.message_from_bytes(raw, policy=compat32))


def _nested(depth: int) -> bytes:
    """A message whose innermost text part is `depth` entities deep (the message itself is depth 1)."""
    head = b"Subject: nested\r\n"
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth - 1)
    )
    closing = b"".join(b"\r\n--b%d--" % i for i in reversed(range(depth - 1)))
    return head + opening + b"Content-Type: text/plain\r\n\r\ndeep" + closing + b"\r\n"


def test_nesting_up_to_the_limit_is_parsed() -> None:
    part = parse_mime(_nested(MAX_DEPTH))
    for _ in range(MAX_DEPTH - 1):
        part = _child(part, 0)
    assert part.get_payload() == "deep"


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 1_000])
def test_deeper_nesting_is_kept_unsplit_and_noted(depth: int) -> None:
    notes = MimeNotes()
    part = parse_mime(_nested(depth), notes)
    for _ in range(MAX_DEPTH - 1):
        part = _child(part, 0)
    assert not part.is_multipart() and b"deep" in part.body  # the rest, as one undivided part
    assert notes.notes == [("mime", "MIME structure nested deeper than 32 levels: the rest is kept unsplit")]


def test_parts_beyond_the_limit_are_left_out_and_noted() -> None:
    parts = b"".join(b"--p\r\n\r\nx\r\n" for _ in range(MAX_PARTS + 5))
    raw = b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n' + parts + b"--p--\r\n"
    notes = MimeNotes()
    assert len(_parts(parse_mime(raw, notes))) == MAX_PARTS - 1  # the root counts as a part
    assert notes.notes == [("mime", f"more than {MAX_PARTS} parts: the rest are left out")]


def _children(raw: bytes) -> list[Message]:
    return _parts(parse_mime(raw))


def test_boundary_that_prefixes_another_boundary() -> None:
    raw = (
        b'Content-Type: multipart/mixed; boundary="ab"\r\n\r\n--ab\r\n'
        b'Content-Type: multipart/alternative; boundary="abc"\r\n\r\n'
        b"--abc\r\n\r\none\r\n--abc\r\n\r\ntwo\r\n--abc--\r\n"
        b"--ab  \r\n\r\nthree\r\n--ab--\r\n"  # transport padding after a delimiter is allowed
    )
    inner, last = _children(raw)
    assert [part.get_payload() for part in _parts(inner)] == ["one", "two"]
    assert last.get_payload() == "three"


def test_missing_close_delimiter_runs_the_last_part_to_the_end() -> None:
    raw = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n'
    assert [part.get_payload() for part in _children(raw)] == ["one", "two\r\n"]


def test_multipart_without_delimiters_keeps_its_body_as_text() -> None:
    message = parse_mime(b'Content-Type: multipart/mixed; boundary="b"\r\n\r\nno parts here\r\n')
    assert message.get_payload() == "no parts here\r\n"
    assert part_bytes(message) == b"no parts here\r\n"


def test_digest_parts_default_to_messages() -> None:
    raw = b'Content-Type: multipart/digest; boundary="d"\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\nbody\r\n--d--'
    (part,) = _children(raw)
    assert part.get_content_type() == "message/rfc822"
    assert _child(part, 0)["Subject"] == "one"


@pytest.mark.parametrize(
    ("headers", "body", "expected"),
    [
        ("Content-Transfer-Encoding: base64", b"SGVs!bG8gd29ybGQ=\r\nISE=", b"Hello world!!"),
        ("Content-Transfer-Encoding: quoted-printable", b"caf=C3=A9 lo=\r\nng", "café long".encode()),
        ("Content-Transfer-Encoding: x-uuencode", b"begin 644 f\n%:&5L;&\\`\n`\nend\n", b"hello"),
        ("Content-Transfer-Encoding: 8bit", "Grüße\r\n".encode(), "Grüße\r\n".encode()),
        ("Content-Type: message/rfc822", b"Subject: in\r\n\r\nexact\r\n", b"Subject: in\r\n\r\nexact\r\n"),
    ],
)  # fmt: skip
def test_part_bytes_undoes_the_transfer_encoding(headers: str, body: bytes, expected: bytes) -> None:
    raw = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n' + headers.encode() + b"\r\n\r\n"
    (part,) = _children(raw + body + b"\r\n--b--\r\n")
    assert part_bytes(part) == expected


def test_raw_header_decodes_8bit_values() -> None:
    message = parse_mime('Content-Type: text/plain; name="Übersicht.pdf"\r\nX-A: café\r\n\r\nx'.encode())
    assert raw_header(message, "x-a") == "café"
    assert raw_header(message, "x-missing") is None


def test_header_section_parsing() -> None:
    message = parse_header_section(b"Subject: hi\r\nFrom: a@example.com\r\n\r\nbody")
    assert message.items() == [("Subject", "hi"), ("From", "a@example.com")]
    assert not message.defects
    garbage = parse_header_section(b"Received: from x\r\n\x00\xff not a header\r\n")
    assert garbage.items() == [("Received", "from x")]
    assert any(isinstance(defect, MissingHeaderBodySeparatorDefect) for defect in garbage.defects)


def test_pathological_inputs_are_parsed_whole() -> None:
    huge_header = b"X-Big: " + b"a" * 50_000 + b"\r\nSubject: s\r\n\r\nbody"
    assert parse_mime(huge_header)["Subject"] == "s"
    many_delimiters = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + b"--b\r\n" * 50_000 + b"--b--"
    assert _children(many_delimiters) == []
    false_delimiters = b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n\r\n' + b"x--b" * 100_000
    assert len(_children(false_delimiters)) == 1
