from __future__ import annotations

import base64
import hashlib
from email.message import Message

import pytest

from inbound.ticket.attachments import MAX_FILENAME_BYTES, attachment_record, sanitize_filename
from inbound.ticket.mime_tree import parse_mime


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\evil.dll", "evil.dll"),
        ("C:\\Users\\me\\notes.txt", "notes.txt"),
        ("in\x07voice\x1b\r\n.pdf", "invoice.pdf"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # right-to-left override
        ("zero\u200bwidth.txt", "zerowidth.txt"),
        (".htaccess", "htaccess"),
        ("...hidden", "hidden"),
        ("trailing dots. . .", "trailing dots"),
        ('what?<>:"|*.txt', "what_______.txt"),
        ("CON.txt", "_CON.txt"),
        ("lpt1", "_lpt1"),
        ("Cafe\u0301.txt", "Café.txt"),  # NFC
        ("€ rates.pdf", "€ rates.pdf"),
    ],
)
def test_sanitize_filename(name: str, expected: str) -> None:
    assert sanitize_filename(name, index=1, content_type="application/octet-stream") == expected


@pytest.mark.parametrize(
    ("name", "content_type", "expected"),
    [
        (None, "image/png", "attachment-3.png"),
        ("", "application/pdf", "attachment-3.pdf"),
        ("   ...   ", "text/calendar", "attachment-3.ics"),
        ("../", "application/ms-tnef", "attachment-3.dat"),
        (None, "message/rfc822", "attachment-3.eml"),
        (None, "application/x-unknown-thing", "attachment-3.bin"),
    ],
)
def test_empty_names_fall_back_to_a_numbered_name(name: str | None, content_type: str, expected: str) -> None:
    assert sanitize_filename(name, index=3, content_type=content_type) == expected


def test_long_names_are_cut_to_255_utf8_bytes_keeping_the_extension() -> None:
    ascii_name = sanitize_filename("a" * 300 + ".pdf", index=1, content_type="application/pdf")
    assert ascii_name == "a" * 251 + ".pdf"
    multibyte = sanitize_filename("日" * 200 + ".txt", index=1, content_type="text/plain")
    assert len(multibyte.encode()) <= MAX_FILENAME_BYTES
    assert multibyte.endswith("日.txt")
    no_extension = sanitize_filename("b" * 400, index=1, content_type="text/plain")
    assert no_extension == "b" * MAX_FILENAME_BYTES


def _part(headers: str, body: bytes) -> bytes:
    return (
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n'
        + headers.encode()
        + b"\r\n\r\n"
        + body
        + b"\r\n--x--\r\n"
    )


def _record(headers: str, body: bytes, *, limit: int = 1024) -> dict[str, object]:
    payload = parse_mime(_part(headers, body)).get_payload()
    assert isinstance(payload, list)
    part = payload[0]
    assert isinstance(part, Message)
    return attachment_record(part, 1, max_inline_bytes=limit)


def test_record_of_a_base64_attachment() -> None:
    data = bytes(range(256))
    record = _record(
        'Content-Type: application/octet-stream; name="blob.bin"\r\nContent-Transfer-Encoding: base64',
        base64.encodebytes(data),
    )
    assert record == {
        "filename": "blob.bin",
        "content_type": "application/octet-stream",
        "size": 256,
        "content_id": None,
        "disposition": "attachment",
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_base64": base64.b64encode(data).decode(),
        "truncated": False,
    }


def test_content_over_the_inline_limit_is_left_out() -> None:
    record = _record(
        "Content-Type: application/pdf\r\nContent-Disposition: attachment", b"x" * 2000, limit=1999
    )
    assert (record["truncated"], record["content_base64"], record["size"]) == (True, None, 2000)
    assert record["sha256"] == hashlib.sha256(b"x" * 2000).hexdigest()


def test_content_id_and_disposition() -> None:
    inline = _record("Content-Type: image/png\r\nContent-ID:  <img1@example.com> ", b"png")
    assert (inline["content_id"], inline["disposition"]) == ("img1@example.com", "inline")
    declared = _record("Content-Type: image/png\r\nContent-ID: <a>\r\nContent-Disposition: attachment", b"p")
    assert declared["disposition"] == "attachment"
    odd = _record("Content-Type: image/png\r\nContent-Disposition: form-data; name=x", b"p")
    assert odd["disposition"] == "attachment"


def test_invalid_media_types_become_octet_stream() -> None:
    assert _record("Content-Type: text/pla=in", b"x")["content_type"] == "application/octet-stream"
    assert _record("Content-Type: IMAGE/PNG", b"x")["content_type"] == "image/png"


def test_filename_encodings() -> None:
    rfc2231 = _record("Content-Type: text/plain; name*=utf-8''%E2%82%AC.txt", b"x")
    rfc2047 = _record('Content-Type: text/plain; name="=?utf-8?B?4oKsLnR4dA==?="', b"x")
    raw_utf8 = _record('Content-Type: text/plain; name="€.txt"', b"x")  # SMTPUTF8 clients send raw UTF-8
    assert rfc2231["filename"] == rfc2047["filename"] == raw_utf8["filename"] == "€.txt"


def test_forwarded_message_is_named_after_its_subject() -> None:
    record = _record("Content-Type: message/rfc822", b"Subject: Re: Invoice 7\r\n\r\nbody")
    assert record["filename"] == "Re_ Invoice 7.eml"
    assert base64.b64decode(str(record["content_base64"])) == b"Subject: Re: Invoice 7\r\n\r\nbody"
