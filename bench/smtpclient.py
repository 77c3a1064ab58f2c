"""A lean SMTP client for load generation: one asyncio.Protocol per session, MAIL/RCPT/DATA pipelined.

Why not aiosmtplib: it sends one command per round trip and costs several times the CPU per message (measured
in docs/benchmark.md), and on a 2-core machine every cycle the load generator burns is taken from the server
under test. This client does only what the benchmark needs: EHLO, pipelined envelope (RFC 2920) when the
server offers PIPELINING, DATA, QUIT; no TLS, no AUTH.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from dataclasses import dataclass
from typing import cast

from bench.messages import Message

QUEUED_AS_RE = re.compile(rb"queued as ([A-Za-z0-9._:/+=-]+)")


class SmtpError(Exception):
    """A session-level failure: connect, banner, EHLO, timeout or a dropped connection."""


@dataclass(slots=True)
class Reply:
    code: int
    text: bytes  # all lines of a multi-line reply joined with b"\n", codes stripped


@dataclass(slots=True)
class SendResult:
    ok: bool
    code: int  # final reply code; 0 when the session broke
    reply: str
    t_data_end: float  # time.monotonic() after the last byte of DATA was handed to the socket
    t_reply: float  # time.monotonic() when the final reply arrived
    queue_id: str | None


class _ReplyProtocol(asyncio.Protocol):
    """Parses replies as bytes arrive and wakes the reader once it has as many as it asked for."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._lines: list[bytes] = []
        self._replies: deque[Reply] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._want = 0
        self._lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        start = 0
        while (end := self._buffer.find(b"\r\n", start)) >= 0:
            line = bytes(self._buffer[start:end])
            start = end + 2
            self._lines.append(line[4:])
            if line[3:4] != b"-":  # the last line of a reply: "250 ..." (or a bare "250")
                code = int(line[:3]) if line[:3].isdigit() else 0
                self._replies.append(Reply(code, b"\n".join(self._lines)))
                self._lines = []
        del self._buffer[:start]
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = exc or ConnectionResetError("connection closed by the server")
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done() and (len(self._replies) >= self._want or self._lost):
            waiter.set_result(None)

    async def replies(self, count: int, timeout: float) -> list[Reply]:
        if len(self._replies) < count and self._lost is None:
            loop = asyncio.get_running_loop()
            self._want = count
            self._waiter = loop.create_future()
            timer = loop.call_later(timeout, self._timed_out, self._waiter)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
        if len(self._replies) < count:
            raise SmtpError(f"connection lost: {self._lost}")
        return [self._replies.popleft() for _ in range(count)]

    @staticmethod
    def _timed_out(waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(SmtpError("timed out waiting for a reply"))


class SmtpSession:
    def __init__(self, protocol: _ReplyProtocol, timeout: float) -> None:
        self._protocol = protocol
        assert protocol.transport is not None
        self._transport = protocol.transport
        self.timeout = timeout
        self.extensions: set[str] = set()

    @classmethod
    async def open(
        cls, host: str, port: int, *, helo: str, source: str | None = None, timeout: float = 30.0
    ) -> SmtpSession:
        loop = asyncio.get_running_loop()
        try:
            _, protocol = await asyncio.wait_for(
                loop.create_connection(
                    _ReplyProtocol, host, port, local_addr=(source, 0) if source else None
                ),
                timeout,
            )
        except (OSError, TimeoutError) as exc:
            raise SmtpError(f"connect to {host}:{port} from {source}: {exc}") from exc
        session = cls(protocol, timeout)
        try:
            (banner,) = await protocol.replies(1, timeout)
            if banner.code != 220:
                raise SmtpError(f"banner {banner.code} {banner.text!r}")
            session._transport.write(f"EHLO {helo}\r\n".encode())
            (ehlo,) = await protocol.replies(1, timeout)
            if ehlo.code != 250:
                raise SmtpError(f"EHLO {ehlo.code} {ehlo.text!r}")
        except BaseException:
            session.abort()
            raise
        session.extensions = {line.split(b" ")[0].decode().upper() for line in ehlo.text.split(b"\n")[1:]}
        return session

    @property
    def pipelining(self) -> bool:
        return "PIPELINING" in self.extensions

    async def send(self, message: Message) -> SendResult:
        """One transaction. A refusal is a result, not an exception; a broken session raises SmtpError."""
        write, replies = self._transport.write, self._protocol.replies
        envelope = [
            f"MAIL FROM:<{message.mail_from}>\r\n".encode(),
            f"RCPT TO:<{message.rcpt_to}>\r\n".encode(),
        ]
        if self.pipelining:
            write(b"".join(envelope) + b"DATA\r\n")
            mail, rcpt, data = await replies(3, self.timeout)
        else:
            write(envelope[0])
            (mail,) = await replies(1, self.timeout)
            write(envelope[1])
            (rcpt,) = await replies(1, self.timeout)
            write(b"DATA\r\n")
            (data,) = await replies(1, self.timeout)
        now = time.monotonic()
        for step in (mail, rcpt):
            if step.code // 100 != 2:
                if data.code == 354:  # the server wants a body anyway: end it empty
                    write(b".\r\n")
                    await replies(1, self.timeout)
                await self.reset()
                return SendResult(False, step.code, _text(step), now, now, None)
        if data.code != 354:
            await self.reset()
            return SendResult(False, data.code, _text(data), now, now, None)
        write(message.data)
        t_data_end = time.monotonic()
        (final,) = await replies(1, self.timeout)
        t_reply = time.monotonic()
        match = QUEUED_AS_RE.search(final.text)
        queue_id = match.group(1).decode() if match else None
        return SendResult(final.code // 100 == 2, final.code, _text(final), t_data_end, t_reply, queue_id)

    async def reset(self) -> None:
        self._transport.write(b"RSET\r\n")
        await self._protocol.replies(1, self.timeout)

    async def quit(self) -> None:
        try:
            self._transport.write(b"QUIT\r\n")
            await self._protocol.replies(1, min(self.timeout, 5.0))
        except SmtpError:
            pass
        finally:
            self._transport.close()

    def abort(self) -> None:
        self._transport.abort()


def _text(reply: Reply) -> str:
    return f"{reply.code} {reply.text.decode('utf-8', 'replace')}"[:300]
