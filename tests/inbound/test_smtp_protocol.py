from __future__ import annotations

import asyncio
import random
import socket
from pathlib import Path
from typing import BinaryIO

import pytest
from aiosmtpd.smtp import SMTP

from inbound.smtp_protocol import PostroomSMTP, with_enhanced_code
from tests.support.harness import DOMAIN, make_config, message, running, send_raw_dialogue, smtp_port


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("552 Error: Too much mail data", "552 5.3.4 message size exceeds fixed limit"),
        ("503 Error: need RCPT command", "503 5.5.1 Error: need RCPT command"),
        ("501 Syntax: MAIL FROM: <address>", "501 5.5.4 Syntax: MAIL FROM: <address>"),
        ("250 OK", "250 2.0.0 OK"),
        ("550 5.7.1 relay access denied", "550 5.7.1 relay access denied"),
        ("250-PIPELINING", "250-PIPELINING"),
        ("220 mx.example ESMTP", "220 mx.example ESMTP"),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
        ("499 odd", "499 4.0.0 odd"),
    ],
)
def test_enhanced_codes_are_added_only_where_missing(reply: str, expected: str) -> None:
    assert with_enhanced_code(reply) == expected


# ---- `_getaddr`: the fast path answers exactly what aiosmtpd's parser answers ------------------------------


def _both_getaddr(arg: str) -> tuple[object, object]:
    fast = PostroomSMTP.__new__(PostroomSMTP)
    fast.local_part_limit = 0
    reference = SMTP(object())
    answers = []
    for method, obj in ((PostroomSMTP._getaddr, fast), (SMTP._getaddr, reference)):
        try:
            answers.append(method(obj, arg))
        except Exception as exc:  # aiosmtpd's parser raises on some garbage: then both must
            answers.append(type(exc).__name__)
    return answers[0], answers[1]


@pytest.mark.parametrize(
    "arg",
    [
        "<ada@example.org>",
        "<ada@example.org> SIZE=1000 BODY=8BITMIME",
        "<ada@example.org>   SIZE=1 ",
        " <first.last+tag@sub.example.org>",
        '<"quoted local"@example.org>',
        "<ada@[192.0.2.1]>",
        "<@route:ada@example.org>",
        "<ada@b-.example>",
        "<a..b@example.org>",
        "<>",
        "ada@example.org",
        "<ada@example.org",
    ],
)
def test_getaddr_fast_path_agrees_with_aiosmtpd(arg: str) -> None:
    fast, reference = _both_getaddr(arg)
    assert fast == reference


def test_getaddr_fast_path_agrees_with_aiosmtpd_on_random_paths() -> None:
    pieces = ["a", "Z", "9", ".", "-", "+", "_", "@", "<", ">", " ", "=", '"', "[", "]", ":", "ü", "a@b.c"]
    rnd = random.Random(20261122)
    for _ in range(20000):
        arg = "".join(rnd.choice(pieces) for _ in range(rnd.randint(1, 9)))
        arg = rnd.choice(["<", "", " <"]) + arg + rnd.choice([">", "", "> SIZE=5", ">x"])
        fast, reference = _both_getaddr(arg)
        assert fast == reference, arg


def test_getaddr_fast_path_keeps_the_local_part_limit() -> None:
    fast = PostroomSMTP.__new__(PostroomSMTP)
    fast.local_part_limit = 3
    assert PostroomSMTP._getaddr(fast, "<abcd@example.org>") == (None, None)
    assert PostroomSMTP._getaddr(fast, "<abc@example.org>") == ("abc@example.org", "")


# ---- pipelined replies (RFC 2920) -------------------------------------------------------------------------


def _read_replies(reader: BinaryIO, count: int) -> list[str]:
    """`count` complete replies (multi-line ones count once), each as its last line."""
    replies: list[str] = []
    while len(replies) < count:
        line = reader.readline().decode().rstrip()
        assert line, f"connection closed after {replies}"
        if line[3:4] != "-":
            replies.append(line)
    return replies


async def test_a_pipelined_batch_gets_its_replies_in_order_in_one_write(tmp_path: Path) -> None:
    config = make_config(tmp_path / "spool", "http://127.0.0.1:9/tickets")
    async with running(config) as app:
        sock = socket.create_connection(("127.0.0.1", smtp_port(config)), timeout=10)
        reader = sock.makefile("rb")
        with sock, reader:
            await asyncio.to_thread(_read_replies, reader, 1)
            sock.sendall(b"EHLO client.example.org\r\n")
            await asyncio.to_thread(_read_replies, reader, 1)
            (server,) = app.handler._open
            writes: list[bytes] = []
            real_write = server._writer.write

            def counting_write(data: bytes) -> None:
                writes.append(bytes(data))
                real_write(data)

            server._writer.write = counting_write  # type: ignore[method-assign]
            batch = f"MAIL FROM:<ada@example.org>\r\nRCPT TO:<support@acme.{DOMAIN}>\r\nDATA\r\n"
            sock.sendall(batch.encode())
            replies = await asyncio.to_thread(_read_replies, reader, 3)
            assert [r[:9] for r in replies] == ["250 2.1.0", "250 2.1.5", "354 End d"]
            assert len(writes) == 1, writes
            # The message's end and QUIT together: the 250 is held for the 221, and both arrive.
            sock.sendall(message() + b"\r\n.\r\nQUIT\r\n")
            queued, bye = await asyncio.to_thread(_read_replies, reader, 2)
    assert queued.startswith("250 2.0.0") and "queued as" in queued
    assert bye.startswith("221 2.0.0")


async def test_a_lone_command_is_answered_at_once(tmp_path: Path) -> None:
    """No pipelined input behind a command: its reply is not held (the client is waiting for it)."""
    config = make_config(tmp_path / "spool", "http://127.0.0.1:9/tickets")
    async with running(config):
        replies = await asyncio.to_thread(
            send_raw_dialogue,
            smtp_port(config),
            ["EHLO client.example.org", "MAIL FROM:<ada@example.org>", f"RCPT TO:<support@acme.{DOMAIN}>"],
            timeout=5.0,
        )
    assert replies[-2].startswith("250 2.1.0") and replies[-1].startswith("250 2.1.5")
