"""Issue 14, "Broken MIME": what real mail gets wrong, read the way the best parsers read it."""

from __future__ import annotations

import pytest

from tests.inbound.ticket.hostile import HEAD, ticket

PLAIN = b"Content-Type: text/plain\r\n"


@pytest.mark.parametrize(
    ("subject", "decoded"),
    [
        (b"=?iso-8859-1?q?caf\xe9_cr\xe8me?=", "café crème"),
        (b"=?koi8-r?q?\xf0\xd2\xc9\xd7\xc5\xd4?=", "Привет"),
        (b"=?utf-8?q?caf\xc3\xa9?= ok", "café ok"),
        (b"=?windows-1251?Q?\xcf\xf0\xe8=E2\xe5\xf2?=", "Привет"),
    ],
)
def test_raw_8bit_bytes_inside_an_encoded_word_use_its_charset(subject: bytes, decoded: str) -> None:
    assert ticket(HEAD + b"Subject: " + subject + b"\r\n\r\nx\r\n")["subject"] == decoded


RUSSIAN = "Здравствуйте! Мой заказ до сих пор не доставлен. Пожалуйста, проверьте статус доставки."
GERMAN = "Grüße aus München! Die Lieferung ist leider noch nicht angekommen, bitte prüfen Sie das."


@pytest.mark.parametrize(
    ("charset", "body", "encoding"),
    [
        (b"", RUSSIAN, "koi8-r"),  # no charset at all
        (b"; charset=us-ascii", RUSSIAN, "cp1251"),  # promises ASCII
        (b"; charset=iso-8859-1", "Привет, мир: " + RUSSIAN, "utf-8"),  # UTF-8 under a Latin label
        (b"; charset=utf-8", GERMAN, "cp1252"),  # Latin under a UTF-8 label
        (b"; charset=x-unknown-thing", GERMAN, "cp1252"),
    ],
)
def test_8bit_text_with_no_or_a_wrong_charset_is_detected(charset: bytes, body: str, encoding: str) -> None:
    raw = HEAD + b"Subject: s\r\nContent-Type: text/plain" + charset + b"\r\n\r\n" + body.encode(encoding)
    assert ticket(raw)["text"] == body


@pytest.mark.parametrize(
    "field", [b"Bob Smith", b'"Bob Smith"', b"Bob Smith <>", b"=?utf-8?q?Bob_Sm=C3=AFth?="]
)
def test_a_from_with_a_display_name_and_no_address_keeps_the_name(field: bytes) -> None:
    result = ticket(b"From: " + field + b"\r\nTo: support@example.com\r\nSubject: s\r\n\r\nx\r\n")
    assert result["from"] is not None and result["from"]["email"] == ""
    assert result["from"]["name"] in ("Bob Smith", "Bob Smïth")


MULTIPART = HEAD + b'Subject: s\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'


@pytest.mark.parametrize(
    "body",
    [
        b"--b\r\n" + PLAIN + b"\r\nhello there\r\n--b\r\nContent-Type: image/png\r\n\r\nPNG",  # no close
        b"--b\r\n" + PLAIN + b"\r\nhello there",  # one part, unterminated
        b"--b\r\nhello there\r\n--b--\r\n",  # a part without headers
        b"--b\r\n\r\nhello there\r\n--b--\r\n",  # a part with an empty header section
        b"preamble\r\n--wrong\r\n"
        + PLAIN
        + b"\r\nhello there\r\n--wrong\r\n"
        + PLAIN
        + b"\r\nbye\r\n--wrong--\r\n",
        b"hello there\r\n",  # a multipart without any boundary line
    ],
)
def test_the_first_text_of_a_malformed_multipart_is_the_body(body: bytes) -> None:
    text = ticket(MULTIPART + body)["text"]
    assert text is not None and text.startswith("hello there"), text


def test_a_multipart_without_a_boundary_parameter_still_gives_its_text() -> None:
    raw = HEAD + b"Subject: s\r\nContent-Type: multipart/alternative\r\n\r\n--x\r\n" + PLAIN
    raw += b"\r\nhello there\r\n--x\r\nContent-Type: text/html\r\n\r\n<p>hello there</p>\r\n--x--\r\n"
    result = ticket(raw)
    assert result["text"] == "hello there"
    assert result["html"] == "<p>hello there</p>"
