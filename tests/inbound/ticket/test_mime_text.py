from __future__ import annotations

import base64

import pytest

from inbound.ticket.mime_text import (
    decode_base64_lenient,
    decode_bytes,
    decode_encoded_words,
    header_str,
    normalize_newlines,
    scrub_surrogates,
)


@pytest.mark.parametrize(
    ("data", "charset", "expected"),
    [
        ("Привет".encode("koi8-r"), "koi8-r", "Привет"),
        ("日本語".encode("iso2022_jp"), "ISO-2022-JP", "日本語"),
        ("Grüße".encode(), None, "Grüße"),  # no label: valid UTF-8 is UTF-8
        ("Grüße".encode("cp1252"), None, "Grüße"),  # no label, not UTF-8: Windows-1252
        (b"\x80 5", "iso-8859-1", "€ 5"),  # Latin-1 labels read as their Windows-1252 superset
        ("Señor".encode(), "us-ascii", "Señor"),  # "ASCII" that is really UTF-8
        ("Café".encode("latin-1"), "x-bogus-charset", "Café"),  # unknown label: sniffed
        ("Ol\u00e1".encode(), '"UTF-8"', "Olá"),  # quoted label
        (b"\\ud800", "unicode_escape", "\\ud800"),  # escape codecs are refused, text stays literal
        (b"eJw=", "base64", "eJw="),  # bytes-to-bytes codecs are refused
        (b"a +2D0- b", "utf-7", "a \ufffd b"),  # a codec that yields a lone surrogate
        (b"a \xff b", "utf-8", "a \ufffd b"),  # declared, wrong, and not UTF-8 either: replacement
        (b"", "utf-8", ""),
    ],
)
def test_decode_bytes(data: bytes, charset: str | None, expected: str) -> None:
    assert decode_bytes(data, charset) == expected


def test_decode_bytes_prefers_utf8_when_the_declared_charset_does_not_fit() -> None:
    assert decode_bytes("Á".encode(), "windows-1252") == "Á"  # its byte 0x81 is undefined in Windows-1252


def test_scrub_surrogates() -> None:
    assert scrub_surrogates("plain") == "plain"
    assert scrub_surrogates("a\ud800b") == "a\ufffdb"
    assert scrub_surrogates("\ud83d\udc01") == "🐁"  # a pair is joined, not replaced
    assert scrub_surrogates("x\udcc3") == "x\ufffd"


def test_header_str_unfolds_and_decodes_8bit_bytes() -> None:
    assert header_str("a\r\n b\n\tc") == "a b\tc"
    assert header_str("  spaced  ") == "spaced"
    assert header_str("caf\udcc3\udca9") == "café"  # raw UTF-8 bytes, as the parser escapes them
    assert header_str("caf\udce9") == "café"  # raw Latin-1 byte


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (base64.encodebytes(b"x" * 200), b"x" * 200),
        (b"SGVs!!bG8=", b"Hello"),  # stray characters
        (b"SGVsbG8", b"Hello"),  # missing padding
        (b"SGVsbG8gd29ybGQ=\r\nSGVsbG8=", b"Hello worldHello"),  # padding in the middle
        (b"SGVsbG8gd29ybGQ=SGVsbG8", b"Hello worldHello"),
        (b"SGVsbG8gV", b"Hello "),  # a dangling sextet is dropped
        (b"", b""),
        (b"====", b""),
    ],
)
def test_decode_base64_lenient(data: bytes, expected: bytes) -> None:
    assert decode_base64_lenient(data) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no words here", "no words here"),
        ("=?utf-8?q?Caf=C3=A9_cr=C3=A8me?=", "Café crème"),
        ("=?UTF-8?B?w6k=?= =?UTF-8?B?w6k=?=", "éé"),  # whitespace between words is dropped
        ("Re: =?utf-8?q?caf=C3=A9?= ok", "Re: café ok"),  # but kept next to plain text
        ("=?utf-8?B?ww==?= =?utf-8?B?qQ==?=", "é"),  # a character split across two words
        ("=?iso-8859-1?q?caf=E9?= =?utf-8?q?_cr=C3=A8me?=", "café crème"),
        ("=?x-unknown?q?Ren=E9?=", "René"),  # unknown charset: sniffed
        ("=?utf-8?B?QnJva2Vu?=", "Broken"),
        ("=?utf-8?B?QnJva2VuIHBhZGRpbmc?=", "Broken padding"),  # missing padding
        ("=?utf-8?q?missing_end", "missing end"),  # missing "?=" at the end
        ("=?utf-8*en?q?with_language?=", "with language"),  # RFC 2231 language tag
        ("=?utf-8?Z?not-an-encoding?=", "=?utf-8?Z?not-an-encoding?="),
        ("=?ISO-2022-JP?B?GyRCJEskWyRzJDQbKEI=?=", "にほんご"),
    ],
)
def test_decode_encoded_words(text: str, expected: str) -> None:
    assert decode_encoded_words(text) == expected


def test_normalize_newlines() -> None:
    assert normalize_newlines("a\r\nb\rc\nd") == "a\nb\nc\nd"
    assert normalize_newlines("unchanged\n") == "unchanged\n"
