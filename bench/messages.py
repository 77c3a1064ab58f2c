"""The benchmark's messages: a reproducible mix of sizes, each carrying a unique marker.

The marker (``pbm<run>x<seq>``) is in the Subject, a header and the body, so the receiver can match a ticket
to the SMTP transaction that produced it whatever the system under test puts in its JSON. Bodies are built
once per size class and the marker is substituted per message, so generating load costs next to nothing.
"""

from __future__ import annotations

import base64
import random
import re
from dataclasses import dataclass

SIZE_CLASSES = ("small", "medium", "attach")
# Names that exist in fixtures/dns/zones, so the cheap profile's DNS checks pass (see bench/services.py).
SENDER_DOMAINS = ("pass.spf.test",)
HELO = "mail.hosts.test"
DEFAULT_MIX = "small:100"
REALISTIC_MIX = "small:80,medium:15,attach:5"
MARKER_RE = re.compile(rb"pbm[0-9a-z]{1,12}x[0-9]{7}")
_SLOT_RE = re.compile(rb"(@@MARKER@@|\{FROM\}|\{TO\})")
_WORDS = (
    b"order invoice refund delivery account password printer broken thanks please urgent "
    b"hello team issue ticket update shipping address number yesterday again login"
).split()


@dataclass(frozen=True)
class Mix:
    """Relative weights of the size classes, e.g. parsed from 'small:80,medium:15,attach:5'."""

    weights: tuple[tuple[str, float], ...]

    @classmethod
    def parse(cls, text: str) -> Mix:
        weights = []
        for part in text.split(","):
            name, _, weight = part.strip().partition(":")
            if name not in SIZE_CLASSES:
                raise ValueError(f"unknown size class {name!r}; choose from {', '.join(SIZE_CLASSES)}")
            weights.append((name, float(weight or 1)))
        if not weights or sum(w for _, w in weights) <= 0:
            raise ValueError(f"empty mix {text!r}")
        return cls(tuple(weights))

    def __str__(self) -> str:
        return ",".join(f"{name}:{weight:g}" for name, weight in self.weights)


@dataclass(frozen=True, slots=True)
class Message:
    seq: int
    marker: str
    size_class: str
    mail_from: str
    rcpt_to: str
    data: bytes  # dot-stuffed, CRLF line endings, ends with the terminating "\r\n.\r\n"


def _text(rng: random.Random, size: int, width: int = 72) -> bytes:
    lines, line, total = [], b"", 0
    while total < size:
        word = rng.choice(_WORDS)
        if len(line) + len(word) + 1 > width:
            lines.append(line)
            total += len(line) + 2
            line = b""
        line = f"{line.decode()} {word.decode()}".strip().encode()
    lines.append(line)
    return b"\r\n".join(lines) + b"\r\n"


def _headers(content_type: str, boundary: str = "") -> bytes:
    ctype = f'{content_type}; boundary="{boundary}"' if boundary else f"{content_type}; charset=utf-8"
    return (
        "From: Customer <{FROM}>\r\n"
        "To: <{TO}>\r\n"
        "Subject: Help with order @@MARKER@@\r\n"
        "Date: Sat, 22 Nov 2025 10:00:00 +0000\r\n"
        "Message-ID: <@@MARKER@@@bench.test>\r\n"
        "X-Bench-Marker: @@MARKER@@\r\n"
        "MIME-Version: 1.0\r\n"
        f"Content-Type: {ctype}\r\n"
        "\r\n"
    ).encode()


def _template(size_class: str, rng: random.Random) -> bytes:
    """One message of a class with @@MARKER@@, {FROM} and {TO} left to fill in."""
    intro = b"Hello,\r\n\r\nreference @@MARKER@@\r\n\r\n"
    if size_class == "small":  # 1-2 KB plain text
        return _headers("text/plain") + intro + _text(rng, rng.randint(700, 1600))
    boundary = "=_bench_boundary"
    text = intro + _text(rng, 9000)
    html = b"<html><body><p>" + text.replace(b"\r\n", b"<br>\r\n") + b"</p></body></html>\r\n"
    parts = [
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n".encode() + text,
        f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n".encode() + html,
    ]
    if size_class == "medium":  # ~20 KB multipart/alternative
        return _headers("multipart/alternative", boundary) + b"".join(parts) + f"--{boundary}--\r\n".encode()
    # A 100 KB binary attachment, base64 in 76-column lines as a mail client would send it.
    blob = base64.encodebytes(rng.randbytes(100 * 1024)).replace(b"\n", b"\r\n")
    attachment = (
        f'--{boundary}\r\nContent-Type: application/pdf; name="invoice.pdf"\r\n'
        'Content-Disposition: attachment; filename="invoice.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode() + blob
    return _headers("multipart/mixed", boundary) + parts[0] + attachment + f"--{boundary}--\r\n".encode()


def _dot_stuff(data: bytes) -> bytes:
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    return stuffed + b".\r\n"


class MessageFactory:
    """Deterministic messages for one run: same run id, mix and seed give the same bytes."""

    def __init__(
        self,
        run_id: str,
        mix: Mix,
        *,
        domain: str = "helpdesk.test",
        tenants: int = 10,
        sender_domains: tuple[str, ...] = SENDER_DOMAINS,
        seed: int = 1,
    ) -> None:
        if not re.fullmatch(r"[0-9a-z]{1,12}", run_id):
            raise ValueError("run id must be 1-12 lowercase letters or digits")
        self.run_id = run_id
        self.mix = mix
        self.domain = domain
        self.tenants = tenants
        self.sender_domains = sender_domains
        rng = random.Random(seed)
        # Templates are dot-stuffed once and cut at their placeholders (which never start a line).
        self._templates = {name: _SLOT_RE.split(_dot_stuff(_template(name, rng))) for name, _ in mix.weights}
        names = [name for name, _ in mix.weights]
        weights = [weight for _, weight in mix.weights]
        # A fixed sequence of classes: the mix is exact per run, not just on average.
        self._classes = rng.choices(names, weights, k=1000)

    def marker(self, seq: int) -> str:
        return f"pbm{self.run_id}x{seq:07d}"

    def make(self, seq: int) -> Message:
        size_class = self._classes[seq % len(self._classes)]
        marker = self.marker(seq)
        mail_from = f"customer{seq % 97}@{self.sender_domains[seq % len(self.sender_domains)]}"
        rcpt_to = f"support+{seq}@tenant{seq % self.tenants}.{self.domain}"
        values = {b"@@MARKER@@": marker.encode(), b"{FROM}": mail_from.encode(), b"{TO}": rcpt_to.encode()}
        # split() with a capturing group alternates text and placeholder: even indexes are text.
        parts = self._templates[size_class]
        data = b"".join(part if i % 2 == 0 else values[part] for i, part in enumerate(parts))
        return Message(seq, marker, size_class, mail_from, rcpt_to, data)
