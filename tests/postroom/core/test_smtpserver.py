from __future__ import annotations

import asyncio
import random
import socket
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, BinaryIO, cast

import pytest
from aiosmtpd.smtp import SMTP

from postroom.core.smtpserver import PostroomSMTP, _YieldingStreamReader, with_enhanced_code
from postroom.core.spool import INCOMING
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
            writes = record_writes(server)
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


async def test_the_lines_of_a_multiline_reply_go_out_in_one_write(tmp_path: Path) -> None:
    config = make_config(tmp_path / "spool", "http://127.0.0.1:9/tickets")
    async with running(config) as app:
        sock = socket.create_connection(("127.0.0.1", smtp_port(config)), timeout=10)
        reader = sock.makefile("rb")
        with sock, reader:
            await asyncio.to_thread(_read_replies, reader, 1)
            (server,) = app.handler._open
            writes = record_writes(server)
            sock.sendall(b"EHLO client.example.org\r\n")
            (last,) = await asyncio.to_thread(_read_replies, reader, 1)
    assert last == "250 HELP"
    assert len(writes) == 1, writes
    lines = writes[0].decode().split("\r\n")
    assert lines[0].startswith("250-mx.helpdesk.test") and lines[-2:] == ["250 HELP", ""]
    assert all(line.startswith("250-") for line in lines[:-2])


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


# ---- DATA read in chunks --------------------------------------------------------------------------------


def _aiosmtpd_reading(stream: bytes) -> tuple[bytes, bytes]:
    """aiosmtpd's line-by-line DATA loop on `stream`: (the message, what is left after its end)."""
    lines: list[bytes] = []
    start = 0
    while True:
        end = stream.index(b"\r\n", start) + 2
        line = stream[start:end]
        if line == b".\r\n":
            return b"".join(lines), stream[end:]
        lines.append(line[1:] if line.startswith(b".") else line)
        start = end


def _random_message(rng: random.Random) -> bytes:
    pieces = [b"a", b"..", b".", b"\r", b"\n", b"\xff\x00", b" ", b"\r\n", b"\r\n.", b"\r\n..", b"x" * 40]
    body = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 60)))
    return body if body.endswith(b"\r\n") or not body else body + b"\r\n"


async def _read_data_from(
    chunks: list[bytes], *, size_limit: int = 0, line_limit: int = 1001
) -> tuple[bytes | None, str | None, bytes]:
    """Feed a real StreamReader chunk by chunk; return `_read_data`'s answer and what is left buffered."""
    reader = _YieldingStreamReader(limit=line_limit)
    session = cast(PostroomSMTP, SimpleNamespace(data_size_limit=size_limit, line_length_limit=line_limit))

    async def feed() -> None:
        for chunk in chunks:
            reader.feed_data(chunk)
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    content, problem = await PostroomSMTP._read_data(session, reader)
    await feeder
    left = await reader.read()
    return content, problem, left


def _chunked(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = (
        sorted(rng.sample(range(1, len(data)), min(len(data) - 1, rng.randint(0, 6))))
        if len(data) > 1
        else []
    )
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


async def test_read_data_agrees_with_aiosmtpd_on_random_messages_and_chunkings() -> None:
    rng = random.Random(20261206)
    for _ in range(400):
        body = _random_message(rng)
        stream = body + b".\r\nQUIT\r\n"
        content, problem, left = await _read_data_from(_chunked(stream, rng))
        expected, rest = _aiosmtpd_reading(stream)  # an unstuffed ".\r\n" line in the body ends it early
        assert (content, problem, left) == (expected, None, rest), stream


async def test_read_data_finds_an_end_split_across_chunks_and_an_empty_message() -> None:
    assert await _read_data_from([b"Subject: x\r\n\r\nbody\r", b"\n", b".", b"\r", b"\nRSET\r\n"]) == (
        b"Subject: x\r\n\r\nbody\r\n",
        None,
        b"RSET\r\n",
    )
    assert await _read_data_from([b".\r\n"]) == (b"", None, b"")


async def test_read_data_refuses_too_much_and_too_long_only_after_the_end() -> None:
    big = b"x" * 70 + b"\r\n"
    content, problem, left = await _read_data_from([big] * 5000 + [b".\r\nNOOP\r\n"], size_limit=1000)
    assert (content, left) == (None, b"NOOP\r\n") and problem is not None and problem.startswith("552 5.3.4")
    content, problem, left = await _read_data_from([b"a" * 1000 + b"\r\n.\r\n"], line_limit=1001)
    assert (content, problem, left) == (None, "500 Line too long (see RFC5321 4.5.3.1.6)", b"")
    assert (await _read_data_from([b"a" * 999 + b"\r\n.\r\n"], line_limit=1001))[1] is None


async def test_data_dropped_past_the_size_limit_never_fakes_an_end() -> None:
    """A line "Z." cut just after its dot: once earlier bytes are dropped, what is kept (".\r\nY") must not
    read as the end of DATA — the rest of the message would then be taken for SMTP commands."""
    chunks = [b"a" * 20 + b"Z.\r\nY", b"rest\r\nMAIL FROM:<x@example.org>\r\n.\r\nNOOP\r\n"]
    content, problem, left = await _read_data_from(chunks, size_limit=10)
    assert content is None and problem is not None and problem.startswith("552 5.3.4")
    assert left == b"NOOP\r\n"


async def test_read_data_agrees_with_aiosmtpd_on_the_size_limit() -> None:
    rng = random.Random(552)
    for _ in range(400):
        stream = _random_message(rng) + b".\r\nQUIT\r\n"
        limit = rng.randint(1, 80)
        content, problem, left = await _read_data_from(
            _chunked(stream, rng), size_limit=limit, line_limit=10**6
        )
        expected, rest = _aiosmtpd_reading(stream)
        received_bytes = len(stream) - len(rest) - len(b".\r\n")  # as sent, before unstuffing
        if received_bytes > limit:
            assert content is None and problem is not None and problem.startswith("552"), stream
        else:
            assert (content, problem) == (expected, None), stream
        assert left == rest, stream


async def test_read_data_at_end_of_stream_is_no_message() -> None:
    assert await _read_data_from([b"Subject: x\r\n\r\nunfinished"]) == (None, None, b"")


async def test_dot_stuffed_lines_long_lines_and_a_pipelined_next_message_over_smtp(tmp_path: Path) -> None:
    config = make_config(tmp_path / "spool", "http://127.0.0.1:9/tickets")
    body = b"Subject: dots\r\n\r\n..leading dot\r\n...\r\n.x\r\nend\r\n"
    envelope = f"MAIL FROM:<ada@example.org>\r\nRCPT TO:<support@acme.{DOMAIN}>\r\nDATA\r\n".encode()
    async with running(config) as app:
        app.runner._stopping = True  # keep the messages spooled to read them back
        sock = socket.create_connection(("127.0.0.1", smtp_port(config)), timeout=10)
        reader = sock.makefile("rb")
        with sock, reader:
            await asyncio.to_thread(_read_replies, reader, 1)
            sock.sendall(b"EHLO client.example.org\r\n" + envelope)
            await asyncio.to_thread(_read_replies, reader, 4)
            # The end of one message, a whole second transaction and QUIT in one write.
            sock.sendall(body + b".\r\n" + envelope)
            first = (await asyncio.to_thread(_read_replies, reader, 4))[0]
            sock.sendall(b"Subject: " + b"y" * 1200 + b"\r\n\r\nx\r\n.\r\n" + envelope)
            too_long = (await asyncio.to_thread(_read_replies, reader, 4))[0]
            sock.sendall(b"Subject: after\r\n\r\nfine\r\n.\r\nQUIT\r\n")
            second, bye = await asyncio.to_thread(_read_replies, reader, 2)
        first_id, second_id = first.rsplit(" ", 1)[1], second.rsplit(" ", 1)[1]
        spooled = app.spool.read(INCOMING, first_id).raw
        after = app.spool.read(INCOMING, second_id).raw
    assert first.startswith("250 2.0.0 queued as") and second.startswith("250 2.0.0 queued as")
    assert too_long.startswith("500 5.5.2 Line too long") and bye.startswith("221")
    assert spooled.endswith(b"Subject: dots\r\n\r\n.leading dot\r\n..\r\nx\r\nend\r\n")
    assert after.endswith(b"Subject: after\r\n\r\nfine\r\n")


# ---- one watchdog timer per session: the idle limit per command and the whole-session limit ----------------


def _noop_every(port: int, interval: float, count: int) -> tuple[list[str], float]:
    """Greeting, then `count` NOOPs `interval` apart, then idle until the server closes: (lines, seconds)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        lines = [reader.readline().decode().rstrip()]
        started = time.monotonic()
        for _ in range(count):
            sock.sendall(b"NOOP\r\n")
            line = reader.readline().decode().rstrip()
            if not line:
                break
            lines.append(line)
            if not line.startswith("250"):
                break
            time.sleep(interval)  # the client's pace, not a wait for the server
        while line := reader.readline().decode().rstrip():  # until the server closes the connection
            lines.append(line)
        return lines, time.monotonic() - started


async def test_each_command_restarts_the_idle_limit_and_silence_ends_the_session(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "spool", "http://127.0.0.1:9/tickets", smtp={"command_timeout": 0.6, "session_timeout": 60}
    )
    async with running(config):
        lines, seconds = await asyncio.to_thread(_noop_every, smtp_port(config), 0.3, 6)
    # Six commands 0.3 s apart outlive the 0.6 s idle limit several times over; then silence closes it.
    assert lines[1:7] == ["250 2.0.0 OK"] * 6
    assert 5 * 0.3 + 0.6 - 0.1 <= seconds < 10  # closed 0.6 s after the last NOOP, not before


async def test_the_session_limit_ends_a_busy_session(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "spool", "http://127.0.0.1:9/tickets", smtp={"command_timeout": 30, "session_timeout": 0.8}
    )
    async with running(config):
        lines, seconds = await asyncio.to_thread(_noop_every, smtp_port(config), 0.1, 100)
    assert lines[-1].startswith("421 4.4.2")
    assert seconds < 5


async def test_commands_do_not_arm_a_timer_each() -> None:
    async def no_hook(server: PostroomSMTP) -> None:
        return None

    server = PostroomSMTP(
        object(), on_connect=no_hook, on_close=lambda s: None, session_timeout=60, timeout=30
    )
    armed: list[float] = []
    loop = asyncio.get_running_loop()

    class CountingLoop:
        def time(self) -> float:
            return loop.time()

        def call_at(self, when: float, callback: Any) -> asyncio.TimerHandle:
            armed.append(when)
            return loop.call_at(when, callback)

    server.loop = cast(asyncio.AbstractEventLoop, CountingLoop())
    server._session_deadline = loop.time() + 60
    for _ in range(50):
        server._reset_timeout()
    server._reset_timeout(5.0)  # a shorter limit (the PROXY header's) must bring the watchdog forward
    assert len(armed) == 2 and armed[1] < armed[0]
    assert server._timeout_handle is not None
    server._timeout_handle.cancel()


def record_writes(server: Any) -> list[bytes]:
    """Every write the session's transport is given from now on, in order (the data is still sent)."""
    writes: list[bytes] = []
    real_write = server._writer.write

    def counting_write(data: bytes) -> None:
        writes.append(bytes(data))
        real_write(data)

    server._writer.write = counting_write
    return writes
