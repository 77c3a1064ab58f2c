"""aiosmtpd's SMTP protocol, adjusted where an MX needs more than it gives.

- The connect stage (concurrency caps, DNSBL, throttle) runs just before the 220 greeting — after a PROXY
  header has told us the real client address — and may answer 421/554 instead of greeting.
- Every 4xx/5xx reply carries an RFC 3463 enhanced status code, including aiosmtpd's built-in replies.
- A whole-session time limit on top of aiosmtpd's per-command idle timeout.
- DATA is read in chunks and searched for the end-of-data line, not line by line (see `_read_data`).
- The guards of `GuardedSMTP` (control characters, error limits, no AUTH) screen every reply.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiosmtpd.smtp import MISSING

from postroom.core import smtpsetup
from postroom.core.replies import MESSAGE_TOO_BIG, SESSION_TOO_LONG
from postroom.core.smtp_guard import GuardedSMTP
from postroom.core.smtp_limits import ErrorLimits

log = logging.getLogger("postroom.smtp")

_END_OF_DATA = b"\r\n.\r\n"
_DATA_CHUNK = 64 * 1024
_YIELD_EVERY_CHUNKS = 16  # ~1 MB of a fast sender between chances for the other sessions
LINE_TOO_LONG = "500 Line too long (see RFC5321 4.5.3.1.6)"  # aiosmtpd's words; push() adds 5.5.2

_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}( |$)")
# aiosmtpd's own reply texts that have a precise meaning worth a precise code.
_KNOWN_REPLIES = {
    "552 Error: Too much mail data": MESSAGE_TOO_BIG.render(),
    "552 Error: message size exceeds fixed maximum message size": MESSAGE_TOO_BIG.render(),
    "250 OK": "250 2.0.0 OK",
    "221 Bye": "221 2.0.0 Bye",
}
_DEFAULT_ENHANCED = {
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "535": "5.7.8",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
    "421": "4.3.0",
    "451": "4.3.0",
    "452": "4.3.1",
}


# A reverse/forward path in its everyday form, <dot-atom@host.name> plus parameters: the fast path of
# `_getaddr`. aiosmtpd's general parser (email's RFC 5322 tokenizer) showed in the profile under load.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_SIMPLE_PATH = re.compile(rf"\s*<({_ATEXT}+(?:\.{_ATEXT}+)*@{_LABEL}(?:\.{_LABEL})*)>(.*)")


def with_enhanced_code(reply: str) -> str:
    """Add an enhanced status code to a single-line 4xx/5xx reply that lacks one."""
    known = _KNOWN_REPLIES.get(reply)
    if known is not None:
        return known
    if len(reply) < 4 or reply[0] not in "45" or _HAS_ENHANCED.match(reply):
        return reply
    code, sep, text = reply[:3], reply[3], reply[4:]
    enhanced = _DEFAULT_ENHANCED.get(code, f"{code[0]}.0.0")
    return f"{code}{sep}{enhanced} {text}"


def say_and_close(transport: asyncio.BaseTransport, reply: str) -> None:
    """Send a last reply line and close. uvloop's transports are not registered as asyncio.WriteTransport,
    so this goes by the method, not the class."""
    write = getattr(transport, "write", None)
    if write is not None:
        write(reply.encode() + b"\r\n")
    transport.close()


class _YieldingStreamReader(asyncio.StreamReader):
    """A StreamReader that lets other tasks run every few hundred lines.

    aiosmtpd reads DATA line by line, and `readuntil` does not suspend while lines are already buffered: a
    10 MB message arriving fast would hold the event loop for all of its ~130,000 lines at once, stalling
    every other session. Yielding every `YIELD_EVERY` lines bounds that to well under a millisecond.
    """

    YIELD_EVERY = 256
    _lines_since_yield = 0
    # Called before the reader waits for the client: replies held back for a pipelined batch go out first.
    before_wait: Callable[[], None] | None = None

    async def readuntil(self, separator: Any = b"\n") -> bytes:
        self._lines_since_yield += 1
        if self._lines_since_yield >= self.YIELD_EVERY:
            self._lines_since_yield = 0
            await asyncio.sleep(0)
        if self.before_wait is not None and not self.has_line():
            self.before_wait()
        return await super().readuntil(separator)

    def unread(self, data: bytes | bytearray) -> None:
        """Put bytes read past the end of DATA back in front of what is buffered."""
        buffer: bytearray = self._buffer  # type: ignore[attr-defined]
        buffer[:0] = data

    def has_line(self) -> bool:
        """A whole line is already buffered: the client pipelined another command."""
        buffer: bytearray = self._buffer  # type: ignore[attr-defined]  # StreamReader's own, undeclared
        return b"\n" in buffer


ConnectHook = Callable[["PostroomSMTP"], Awaitable[str | None]]
CloseHook = Callable[["PostroomSMTP"], None]


class PostroomSMTP(GuardedSMTP):
    def __init__(
        self,
        handler: Any,
        *,
        on_connect: ConnectHook,
        on_close: CloseHook,
        session_timeout: float,
        error_limits: ErrorLimits | None = None,
        offer_auth: bool = True,
        on_error_limit: Callable[[Any], None] | None = None,  # called with this protocol
        **kwargs: Any,
    ) -> None:
        self._yielding_reader: _YieldingStreamReader | None = None
        if smtpsetup.supports(kwargs):  # aiosmtpd's constructor minus its per-connection introspection
            loop = asyncio.get_running_loop()
            own = _YieldingStreamReader(limit=self.line_length_limit, loop=loop)
            smtpsetup.init_protocol(self, handler, own, **kwargs)
            self.init_guard(error_limits=error_limits, offer_auth=offer_auth, on_error_limit=on_error_limit)
        else:
            super().__init__(
                handler,
                error_limits=error_limits,
                offer_auth=offer_auth,
                on_error_limit=on_error_limit,
                **kwargs,
            )
        # aiosmtpd builds its StreamReader inline; give that same object the yielding readuntil above.
        reader = getattr(self, "_stream_reader", None)
        if reader is not None and type(reader) is asyncio.StreamReader:
            reader.__class__ = _YieldingStreamReader
        if isinstance(reader, _YieldingStreamReader):
            self._yielding_reader = reader
            reader.before_wait = self._flush_held
        self._held: list[bytes] = []
        self._on_connect = on_connect
        self._on_close = on_close
        self._session_timeout = session_timeout
        self._greeted = False
        self._session_deadline = math.inf  # loop time; set when the connection is made
        self._idle_deadline = math.inf
        self._watch_at = math.inf  # when the watchdog timer (aiosmtpd's `_timeout_handle`) fires
        self._close_reported = False
        self.postroom_state: Any = None  # the handler's per-session state

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # not the second call, after STARTTLS
            self._session_deadline = self.loop.time() + self._session_timeout
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if not self._close_reported:
            self._close_reported = True
            self._on_close(self)
        super().connection_lost(error)

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """aiosmtpd's `_getaddr`, answered directly when the path is a plain <local@domain>."""
        match = _SIMPLE_PATH.fullmatch(arg)
        if match is None:
            return super()._getaddr(arg)  # quoted local parts, address literals, routes, errors
        address = match[1]
        if self.local_part_limit and address.index("@") > self.local_part_limit:
            return None, None
        return address, match[2].lstrip()

    def _reset_timeout(self, duration: float | None = None) -> None:
        """aiosmtpd calls this for every command, and re-arms a timer each time. Here one watchdog timer per
        session guards both the idle limit and the whole-session limit: a command only moves the idle
        deadline, and the watchdog, when it fires early, re-arms itself for the deadline then current."""
        self._idle_deadline = self.loop.time() + (duration or self._timeout_duration)
        if self._timeout_handle is None or self._idle_deadline < self._watch_at:
            self._arm_watchdog()

    def _arm_watchdog(self) -> None:
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self._watch_at = min(self._idle_deadline, self._session_deadline)
        self._timeout_handle = self.loop.call_at(self._watch_at, self._watchdog)

    def _watchdog(self) -> None:
        now = self.loop.time()
        if now >= self._session_deadline:
            self._session_expired()
        elif now >= self._idle_deadline:
            self._timeout_cb()  # type: ignore[no-untyped-call]  # aiosmtpd's idle timeout: it closes
        else:
            self._timeout_handle = None
            self._arm_watchdog()

    def _session_expired(self) -> None:
        self.close_with(SESSION_TOO_LONG.render())

    def close_with(self, reply: str) -> None:
        """A last reply, after any held ones (a held 250 is a message the client must know we took)."""
        if self.transport is not None:
            self._flush_held()
            say_and_close(self.transport, reply)

    async def push(self, status: Any) -> None:
        if isinstance(status, str):
            if not self._greeted and status.startswith("220 "):
                self._greeted = True
                refusal = await self._on_connect(self)
                if refusal is not None:
                    await super().push(refusal)
                    if self.transport is not None:
                        self.transport.close()
                    return
            screened = await self.screen_reply(with_enhanced_code(status))
            if screened is None:
                return
            response = screened.encode("utf-8" if self.enable_SMTPUTF8 else "ascii") + b"\r\n"
        else:
            response = bytes(status) + b"\r\n"
        await self._send(response)
        self.after_reply()

    async def _send(self, response: bytes) -> None:
        """Write a reply — or hold it while the client has pipelined more commands (RFC 2920).

        A batch MAIL/RCPT/DATA then costs one write instead of three. Held replies go out with the next
        reply sent, or before the reader waits for input, so a client never waits for a reply it is owed.
        Only 250s are held: greetings, 354, errors and the replies before a close are sent at once.

        The lines of a multiline reply before its last ("250-SIZE ...") are held too: the client waits for
        the last line anyway. aiosmtpd pushes EHLO's eight lines one by one; this makes them one write.
        """
        reader = self._yielding_reader
        if reader is not None and (
            response[3:4] == b"-" or (response.startswith(b"250") and reader.has_line())
        ):
            self._held.append(response)
            return
        if self._held:
            response = b"".join((*self._held, response))
            self._held.clear()
        self._writer.write(response)
        await self._writer.drain()

    async def smtp_DATA(self, arg: str) -> None:
        """aiosmtpd's DATA, with the message read by `_read_data` instead of a readuntil per line.

        Replies and limits are aiosmtpd's: 503 without recipients, 501 with an argument, and after the
        whole message has been read, 552 for more than `data_size_limit` bytes, else 500 for a line over
        `line_length_limit` (CRLF included). (aiosmtpd reports whichever of the two it met first.)
        """
        reader = self._yielding_reader
        if reader is None or self._decode_data or "DATA" not in self._handle_hooks:
            await super().smtp_DATA(arg)  # configurations Postroom does not use: aiosmtpd's own loop
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        assert self.envelope is not None
        if not self.envelope.rcpt_tos:
            await self.push("503 Error: need RCPT command")
            return
        if arg:
            await self.push("501 Syntax: DATA")
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        try:
            content, problem = await self._read_data(reader)
        except asyncio.CancelledError:
            log.info("connection lost during DATA")
            self._writer.close()
            raise
        if problem is not None:
            await self.push(problem)
            self._set_post_data_state()  # type: ignore[no-untyped-call]  # aiosmtpd's, unannotated
            return
        if content is None:  # the client went away mid-message
            self._writer.close()
            return
        self.envelope.content = content
        self.envelope.original_content = content
        status = await self._call_handler_hook("DATA")
        self._set_post_data_state()  # type: ignore[no-untyped-call]
        await self.push("250 OK" if status is MISSING else status)

    async def _read_data(self, reader: _YieldingStreamReader) -> tuple[bytes | None, str | None]:
        """(message, None), or (None, reply) when a limit was exceeded, or (None, None) at end of stream.

        aiosmtpd's loop costs a readuntil, a debug log call and two copies per line, a cost that grows
        with the message's line count (docs/benchmark.md). Here each chunk is appended
        and searched for CRLF.CRLF once; dot-unstuffing (a line's leading dot removed, RFC 5321 4.5.2) is
        one replace; line lengths are checked once at the end. Bytes after the end-of-data line (pipelined
        commands) go back to the reader. Past the size limit the data is dropped while reading to the end.
        """
        # A CRLF before the first line makes ".\r\n" at the very start an end too. It is not data: `head`
        # counts it, until data is dropped (and the sentinel with it: it must never sit before kept bytes).
        received = bytearray(b"\r\n")
        head = 2
        size_limit = self.data_size_limit
        scan_from, dropped, chunks = 0, 0, 0
        while True:
            chunk = await reader.read(_DATA_CHUNK)
            if not chunk:
                return None, None
            received += chunk
            end = received.find(_END_OF_DATA, scan_from)
            if end >= 0:
                break
            scan_from = max(0, len(received) - len(_END_OF_DATA) + 1)
            if size_limit and dropped + len(received) - head > size_limit + len(_END_OF_DATA):
                # Too big: keep only the real bytes a terminator split across chunks could start with.
                keep = len(_END_OF_DATA) - 1
                dropped += len(received) - head - keep
                del received[: len(received) - keep]
                head, scan_from = 0, 0
            chunks += 1
            if chunks % _YIELD_EVERY_CHUNKS == 0:
                await asyncio.sleep(0)
        rest = received[end + len(_END_OF_DATA) :]
        if rest:
            reader.unread(rest)
        del received[end + 2 :]  # keep the last line's CRLF
        if size_limit and dropped + len(received) - head > size_limit:
            return None, MESSAGE_TOO_BIG.render()
        if _longest_line(received) > self.line_length_limit:
            return None, LINE_TOO_LONG
        return bytes(received.replace(b"\r\n.", b"\r\n"))[2:], None

    def _flush_held(self) -> None:
        if self._held and self.transport is not None and not self.transport.is_closing():
            self._writer.write(b"".join(self._held))
        self._held.clear()


def _longest_line(data: bytearray) -> int:
    """The longest CRLF-terminated line in `data` (which starts with a CRLF), counting its CRLF."""
    longest, start = 0, 2
    while start < len(data):
        end = data.find(b"\r\n", start)
        if end < 0:
            end = len(data)
        longest = max(longest, end + 2 - start)
        start = end + 2
    return longest
