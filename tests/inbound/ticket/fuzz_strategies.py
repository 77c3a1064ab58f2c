"""Hypothesis strategies for the normaliser's fuzz tests: mutated fixtures and generated MIME trees, both
seasoned with the fragments that broke it before (issue 13)."""

from __future__ import annotations

from hypothesis import strategies as st

from tests.inbound.ticket.corpus import fixture_names, raw_fixture

# Fragments of hostile mail: each once tripped a reader or made an output grow.
HOSTILE_FRAGMENTS = [
    b"(" * 300,
    b"\\" * 50,
    b"=?utf-8?q?hi=0D=0ABcc:_victim@x.com=00?=",
    b"=?iso-8859-1?q?caf\xe9?=",
    b"=?x-\x00?b?AAAA?=",
    b"filename*=undefined''a.pdf",
    b"filename*=idna''%FF.pdf",
    b"name*0=a; name*=b",
    b'charset="utf\x008"',
    b'boundary=""',
    b"\r",
    b"\r\n\r\n",
    b"\r\n--",
    b"<blockquote>" * 40 + b"x<br>" * 20,
    b"Content-Type: multipart/mixed; boundary=b\r\n",
    b"Content-Type: message/rfc822\r\n\r\n",
    b"Content-Type: message/delivery-status\r\n\r\nA: b\r\n\r\nC: d\r\n",
    b"Content-Transfer-Encoding: base64\r\n",
    b"\x00\xff\xfe",
    b"CON .txt",
    "\u3164／∕COM¹".encode(),
]

CHARSETS = [
    "utf-8",
    "iso-8859-1",
    "koi8-r",
    "shift_jis",
    "utf-16",
    "idna",
    "undefined",
    "x-\x00",
    "base64",
    "",
]
LEAF_TYPES = [
    "text/plain",
    "text/html",
    "application/pdf",
    "image/png",
    "message/rfc822",
    "message/delivery-status",
]
ENCODINGS = ["", "7bit", "8bit", "base64", "quoted-printable", "x-uuencode"]


@st.composite
def mutated_fixture(draw: st.DrawFn) -> bytes:
    raw = bytearray(raw_fixture(draw(st.sampled_from(fixture_names()))))
    for _ in range(draw(st.integers(1, 6))):
        position = draw(st.integers(0, len(raw)))
        action = draw(st.sampled_from(["insert", "flip", "delete", "repeat"]))
        if action == "insert":
            raw[position:position] = draw(st.sampled_from(HOSTILE_FRAGMENTS) | st.binary(max_size=20))
        elif action == "flip" and position < len(raw):
            raw[position] = draw(st.integers(0, 255))
        elif action == "delete":
            del raw[position : position + draw(st.integers(1, 200))]
        else:
            chunk = bytes(raw[position : position + draw(st.integers(1, 40))])
            raw[position:position] = chunk * draw(st.integers(1, 50))
    return bytes(raw)


def _header(draw: st.DrawFn, content_type: str, boundary: str | None) -> bytes:
    params = ""
    if boundary is not None:
        params += f'; boundary="{boundary}"'
    if draw(st.booleans()):
        params += f'; charset="{draw(st.sampled_from(CHARSETS))}"'
    if draw(st.booleans()):
        params += (
            f"; name*={draw(st.sampled_from(CHARSETS))}''{draw(st.sampled_from(['a.pdf', '%FF', 'CON']))}"
        )
    lines = [f"Content-Type: {content_type}{params}"]
    encoding = draw(st.sampled_from(ENCODINGS))
    if encoding:
        lines.append(f"Content-Transfer-Encoding: {encoding}")
    if draw(st.booleans()):
        lines.append(
            "Content-Disposition: "
            + draw(st.sampled_from(["inline", "attachment", "attachment; filename*0=x; filename*=y"]))
        )
    header = "\r\n".join(lines).encode("utf-8", "surrogateescape")
    if draw(st.booleans()):
        header += b"\r\n" + draw(st.sampled_from(HOSTILE_FRAGMENTS)).replace(b"\r\n", b" ")
    return header + b"\r\n\r\n"


@st.composite
def mime_entity(draw: st.DrawFn, depth: int = 0, parent_boundary: str = "") -> bytes:
    if depth < 4 and draw(st.integers(0, 2)) == 0:
        # Boundaries that prefix or extend the parent's: the outer scan meets the inner lines.
        boundary = draw(st.sampled_from([parent_boundary + "x", parent_boundary[:-1] or "b", "b", "=_"]))
        children = draw(st.lists(mime_entity(depth + 1, boundary), min_size=0, max_size=4))
        subtype = draw(st.sampled_from(["mixed", "alternative", "related", "report", "digest"]))
        body = b"".join(b"--" + boundary.encode() + b"\r\n" + child + b"\r\n" for child in children)
        if draw(st.booleans()):  # a missing close delimiter is common
            body += b"--" + boundary.encode() + b"--\r\n"
        return _header(draw, f"multipart/{subtype}", boundary) + body
    content_type = draw(st.sampled_from(LEAF_TYPES))
    body = draw(st.binary(max_size=200) | st.sampled_from(HOSTILE_FRAGMENTS))
    return _header(draw, content_type, None) + body


@st.composite
def generated_message(draw: st.DrawFn) -> bytes:
    head = [
        b"From: "
        + draw(st.sampled_from([b"Alice <a@example.com>", b"Bob Smith", b"(" * 200, HOSTILE_FRAGMENTS[2]]))
    ]
    head.append(
        b"Subject: " + draw(st.sampled_from(HOSTILE_FRAGMENTS) | st.binary(max_size=40)).replace(b"\n", b" ")
    )
    if draw(st.booleans()):
        head.append(b"Auto-Submitted: auto-replied")
    return b"\r\n".join(head) + b"\r\nMIME-Version: 1.0\r\n" + draw(mime_entity())
