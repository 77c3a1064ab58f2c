"""Hostile messages of a given size, one generator per class of cost the normaliser must keep linear.

Each generator returns about `size` bytes; the shapes are those of issue reports and of the fuzzing that
found them: nothing here needs a network or a fixture.
"""

from __future__ import annotations

from collections.abc import Callable

HEAD = b"From: a@example.com\r\nTo: support@example.com\r\nSubject: worst case\r\nMIME-Version: 1.0\r\n"


def _fill(prefix: bytes, unit: bytes, suffix: bytes, size: int) -> bytes:
    count = max(1, (size - len(prefix) - len(suffix)) // len(unit))
    return prefix + unit * count + suffix


def nested_blockquotes(size: int) -> bytes:
    """HTML only: thousands of nested quotes, then many short lines (output amplification)."""
    prefix = HEAD + b"Content-Type: text/html\r\n\r\n<html><body>" + b"<blockquote>" * 5000
    return _fill(prefix, b"x<br>", b"</body></html>\r\n", size)


def folded_content_type(size: int) -> bytes:
    """One folded Content-Type with hundreds of thousands of parameters (a quadratic stdlib splitter)."""
    prefix = HEAD + b"Content-Type: text/plain; charset=utf-8"
    return _fill(prefix, b";\r\n a=b", b"\r\n\r\nbody\r\n", size)


def many_header_fields(size: int) -> bytes:
    """Hundreds of thousands of short header fields."""
    return _fill(HEAD, b"X-A: b\r\n", b"\r\nbody\r\n", size)


def prefix_boundaries(size: int) -> bytes:
    """32 nested multiparts whose boundaries prefix each other, the body full of near-miss boundary lines."""
    depth = 32
    opening = b"".join(
        b'Content-Type: multipart/mixed; boundary="%s"\r\n\r\n--%s\r\n' % (b"b" * i, b"b" * i)
        for i in range(1, depth)
    )
    closing = b"".join(b"\r\n--%s--" % (b"b" * i) for i in reversed(range(1, depth)))
    prefix = HEAD + opening + b"Content-Type: text/plain\r\n\r\n"
    return _fill(prefix, b"--" + b"b" * (depth + 2) + b"\r\n", closing + b"\r\n", size)


def many_parts(size: int) -> bytes:
    """A multipart of tiny parts, far more than the part limit."""
    prefix = HEAD + b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n'
    return _fill(prefix, b"--p\r\n\r\nx\r\n", b"--p--\r\n", size)


def delivery_status_blocks(size: int) -> bytes:
    """A DSN whose delivery-status part holds millions of blank-line-separated blocks."""
    prefix = (
        HEAD + b'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
        b"--r\r\nContent-Type: text/plain\r\n\r\nfailed\r\n"
        b"--r\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.com\r\n\r\n"
    )
    return _fill(prefix, b"Action: failed\r\n\r\n", b"--r--\r\n", size)


def address_comments(size: int) -> bytes:
    """Address fields of nested comments and many mailboxes (recursive readers, per-address cost)."""
    field = b"To: " + b"(" * 300 + b"a@example.com, " * 4000 + b"\r\n"
    return _fill(HEAD, field, b"\r\nbody\r\n", size)


def encoded_words(size: int) -> bytes:
    """A Subject of encoded-words that decode to CR, LF and NUL, and 8-bit bytes inside words."""
    prefix = HEAD.replace(b"Subject: worst case\r\n", b"") + b"Subject:"
    return _fill(prefix, b" =?utf-8?q?hi=0D=0A=00?= =?iso-8859-1?q?caf\xe9?=\r\n", b"\r\n\r\nbody\r\n", size)


def control_characters(size: int) -> bytes:
    """A body of control characters and JSON-escaped characters (each would be six bytes in JSON)."""
    return _fill(HEAD + b"Content-Type: text/plain\r\n\r\n", b'\x00\x01"\\\x1b\r\n', b"", size)


def bad_parameters(size: int) -> bytes:
    """Many attachments whose RFC 2231 parameters trip the standard library (field isolation at scale)."""
    prefix = HEAD + b'Content-Type: multipart/mixed; boundary="p"\r\n\r\n'
    unit = (
        b"--p\r\nContent-Type: application/pdf; name*0=a; name*=b; charset*=idna''%FF\r\n"
        b"Content-Disposition: attachment; filename*=undefined''a.pdf\r\n\r\nxx\r\n"
    )
    return _fill(prefix, unit, b"--p--\r\n", size)


GENERATORS: dict[str, Callable[[int], bytes]] = {
    "nested_blockquotes": nested_blockquotes,
    "folded_content_type": folded_content_type,
    "many_header_fields": many_header_fields,
    "prefix_boundaries": prefix_boundaries,
    "many_parts": many_parts,
    "delivery_status_blocks": delivery_status_blocks,
    "address_comments": address_comments,
    "encoded_words": encoded_words,
    "control_characters": control_characters,
    "bad_parameters": bad_parameters,
}
