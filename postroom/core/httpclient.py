"""A lean HTTP/1.1 keep-alive transport for httpx: one connection, its own wire format, no httpcore or h11.

Postroom delivers with httpx: httpx's Request and Response are the webhook's request/response model,
`KeepAliveTransport` implements httpx's transport interface (`httpx.AsyncBaseTransport`) and raises httpx's
exception hierarchy (ConnectError, WriteError, ReadError, RemoteProtocolError). Only the connection layer is
ours, for speed: httpcore's pool, its HTTP/1.1 connection and h11 were a large share of the process's CPU
under load (docs/benchmark.md has the measurements, `python -m bench.micro.drain` repeats them).

It does what a webhook client needs and no more: one request at a time on one connection (the caller keeps
one transport per concurrent attempt), the body sent with Content-Length in the same write as the head, the
answer parsed here (status line, headers, 1xx interim answers skipped, bodies framed by Content-Length,
chunked coding or the connection's close), at most `max_response_bytes` of a body read. It has no timeouts of
its own: the caller bounds each whole exchange (`asyncio.timeout`), and a cancelled exchange closes the
connection, so no half-read answer is ever reused.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import SupportsIndex

import httpx

# The longest response head (status line and headers) or trailer section accepted; also the reader's limit,
# so the longest chunk-size line.
MAX_HEAD_BYTES = 64 * 1024

_DEFAULT_PORTS = {"http": 80, "https": 443}
_END_OF_HEAD = b"\r\n\r\n"
_CRLF = b"\r\n"
_STATUS_LINE = re.compile(rb"(HTTP/1\.[01]) ([0-9]{3})(?: ([^\r\n]*))?")
_FIELD_NAME = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_OWS = b" \t"
_BODYLESS_STATUSES = frozenset({204, 304})
# Request headers the transport writes itself, from the body it actually sends.
_OURS = frozenset({b"content-length", b"transfer-encoding"})

Origin = tuple[str, str, int]  # scheme, host, port: what a connection can be reused for


class TransportSlots:
    """At most `limit` single-connection transports, one per request in flight, made on first need and
    handed out LIFO (the warmest connection first).

    A shared pool scans every connection on every request (httpcore: a poll() and getpeername() each), which
    made it the webhook runner's main cost; a slot per concurrent request has nothing to scan.
    """

    def __init__(self, make: Callable[[], httpx.AsyncBaseTransport], limit: int) -> None:
        self._make = make
        self._limit = limit
        self._idle: asyncio.LifoQueue[httpx.AsyncBaseTransport] = asyncio.LifoQueue()
        self._made: list[httpx.AsyncBaseTransport] = []

    async def acquire(self) -> httpx.AsyncBaseTransport:
        if self._idle.empty() and len(self._made) < self._limit:
            slot = self._make()
            self._made.append(slot)
            return slot
        return await self._idle.get()

    def release(self, slot: httpx.AsyncBaseTransport) -> None:
        self._idle.put_nowait(slot)

    async def aclose(self) -> None:
        for slot in self._made:
            await slot.aclose()


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """One HTTP/1.1 connection, kept open between requests when the server allows it."""

    def __init__(self, *, max_response_bytes: int, ssl_context: ssl.SSLContext | None = None) -> None:
        self._max_response_bytes = max_response_bytes
        self._ssl_context = ssl_context  # shared by every transport: each context loads the CA bundle
        self._connection: _Connection | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        origin = _origin(request)
        message = _serialise(request, await request.aread())
        try:
            response, reusable = await self._round_trip(origin, message, request)
        except BaseException:
            # Failed, or cancelled by the caller's deadline mid-exchange: the connection's state is unknown.
            self._discard(abort=True)
            raise
        if not reusable:
            self._discard()
        return response

    async def aclose(self) -> None:
        self._discard()

    async def _round_trip(
        self, origin: Origin, message: bytes, request: httpx.Request
    ) -> tuple[httpx.Response, bool]:
        connection = self._reusable_connection(origin)
        if connection is not None:
            try:
                return await connection.exchange(message, request)
            except _NoResponse:
                # The server closed the idle connection as we reused it (the keep-alive race) and not one byte
                # of an answer came back, so send again on a fresh connection. Resending is safe for our
                # users: the webhook is idempotent by its Idempotency-Key header, a Rspamd scan by nature.
                self._discard(abort=True)
        connection = await self._connect(origin, request)
        try:
            return await connection.exchange(message, request)
        except _NoResponse as exc:
            raise exc.error from exc.__cause__

    def _reusable_connection(self, origin: Origin) -> _Connection | None:
        if self._connection is not None and not self._connection.reusable_for(origin):
            self._discard()
        return self._connection

    async def _connect(self, origin: Origin, request: httpx.Request) -> _Connection:
        context = self._tls_context() if origin[0] == "https" else None
        try:
            self._connection = await _Connection.open(origin, context, self._max_response_bytes)
        except OSError as exc:  # refused, unreachable, DNS, TLS handshake or certificate
            raise httpx.ConnectError(_describe(exc), request=request) from exc
        return self._connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = ssl.create_default_context()
        return self._ssl_context

    def _discard(self, *, abort: bool = False) -> None:
        if self._connection is not None:
            self._connection.close(abort=abort)
            self._connection = None


class _NoResponse(Exception):
    """The connection failed before one byte of an answer arrived; `error` is what to raise if not resent."""

    def __init__(self, error: httpx.TransportError) -> None:
        super().__init__(str(error))
        self.error = error


class _Malformed(Exception):
    """The server's answer breaks HTTP/1.1 framing or syntax."""


class _Reader(asyncio.StreamReader):
    """A StreamReader that notices bytes arriving while no request is outstanding.

    A server may answer an idle connection before closing it (a stray `408`, say); reading that as the answer
    to our next request would be wrong, so such a connection is not reused.
    """

    def __init__(self) -> None:
        super().__init__(limit=MAX_HEAD_BYTES)
        self.awaiting_response = False
        self.unsolicited = False

    def feed_data(self, data: Iterable[SupportsIndex]) -> None:
        if not self.awaiting_response:
            self.unsolicited = True
        super().feed_data(data)


@dataclass(frozen=True, slots=True)
class _Head:
    version: bytes
    status: int
    reason: bytes
    fields: list[tuple[bytes, bytes]]
    content_length: int | None
    chunked: bool
    keep_alive: bool


class _Connection:
    def __init__(
        self, origin: Origin, reader: _Reader, writer: asyncio.StreamWriter, max_response_bytes: int
    ) -> None:
        self.origin = origin
        self._reader = reader
        self._writer = writer
        self._max_response_bytes = max_response_bytes

    @classmethod
    async def open(
        cls, origin: Origin, context: ssl.SSLContext | None, max_response_bytes: int
    ) -> _Connection:
        # asyncio.open_connection's three steps, with our own reader.
        _, host, port = origin
        loop = asyncio.get_running_loop()
        reader = _Reader()
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await loop.create_connection(
            lambda: protocol, host, port, ssl=context, server_hostname=host if context else None
        )
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return cls(origin, reader, writer, max_response_bytes)

    def reusable_for(self, origin: Origin) -> bool:
        """False once the server closed, reset or spoke on the idle connection, or for another origin."""
        reader = self._reader
        return (
            origin == self.origin
            and not self._writer.transport.is_closing()
            and not reader.at_eof()
            and reader.exception() is None
            and not reader.unsolicited
        )

    def close(self, *, abort: bool) -> None:
        if abort:
            self._writer.transport.abort()  # drop unsent bytes: the exchange is over either way
        else:
            self._writer.close()

    async def exchange(self, message: bytes, request: httpx.Request) -> tuple[httpx.Response, bool]:
        """Send `message`, read the answer; also whether the connection may carry another request."""
        await self._send(message, request)
        try:
            head = await self._read_final_head(request)
            body, complete = await self._read_body(head, request.method)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, _Malformed) as exc:
            raise httpx.RemoteProtocolError(_protocol_fault(exc), request=request) from exc
        except OSError as exc:
            raise httpx.ReadError(_describe(exc), request=request) from exc
        reusable = complete and head.keep_alive
        self._reader.awaiting_response = False
        response = httpx.Response(
            head.status,
            headers=head.fields,
            # stream=, not content=: the body stays raw (not decoded per Content-Encoding), as from httpcore.
            stream=httpx.ByteStream(body),
            request=request,
            extensions={"http_version": head.version, "reason_phrase": head.reason},
        )
        return response, reusable

    async def _send(self, message: bytes, request: httpx.Request) -> None:
        self._reader.awaiting_response = True
        try:
            self._writer.write(message)
            await self._writer.drain()
        except OSError as exc:
            raise _NoResponse(httpx.WriteError(_describe(exc), request=request)) from exc

    async def _read_final_head(self, request: httpx.Request) -> _Head:
        head = _parse_head(await self._read_first_head(request))
        # Interim answers (100 Continue, 103 Early Hints) come before the final one.
        while 100 <= head.status < 200:
            if head.status == 101:
                raise _Malformed("unexpected 101 Switching Protocols")
            head = _parse_head(await self._reader.readuntil(_END_OF_HEAD))
        return head

    async def _read_first_head(self, request: httpx.Request) -> bytes:
        try:
            return await self._reader.readuntil(_END_OF_HEAD)
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise
            message = "server disconnected without sending a response"
            raise _NoResponse(httpx.RemoteProtocolError(message, request=request)) from exc
        except ConnectionError as exc:
            # asyncio raises a reset before handing out any partial head, so no answer reached us.
            raise _NoResponse(httpx.ReadError(_describe(exc), request=request)) from exc

    async def _read_body(self, head: _Head, method: str) -> tuple[bytes, bool]:
        """At most `max_response_bytes` of the body, and whether it was read to its end (so none is left)."""
        if method == "HEAD" or head.status in _BODYLESS_STATUSES:
            return b"", True
        if head.chunked:
            return await self._read_chunked()
        if head.content_length is not None:
            return await self._read_exactly(head.content_length)
        return await self._read_until_close(), False  # delimited by the close: never reusable

    async def _read_exactly(self, length: int) -> tuple[bytes, bool]:
        if length > self._max_response_bytes:
            return await self._reader.readexactly(self._max_response_bytes), False
        return await self._reader.readexactly(length), True

    async def _read_chunked(self) -> tuple[bytes, bool]:
        body = bytearray()
        while size := _chunk_size(await self._reader.readuntil(_CRLF)):
            room = self._max_response_bytes - len(body)
            if size > room:
                body += await self._reader.readexactly(room)
                return bytes(body), False
            body += await self._reader.readexactly(size)
            if await self._reader.readexactly(2) != _CRLF:
                raise _Malformed("chunk data longer than its size")
        await self._skip_trailers()
        return bytes(body), True

    async def _skip_trailers(self) -> None:
        size = 0
        while (line := await self._reader.readuntil(_CRLF)) != _CRLF:
            size += len(line)
            if size > MAX_HEAD_BYTES:
                raise _Malformed("trailer section larger than 64 KiB")

    async def _read_until_close(self) -> bytes:
        body = bytearray()
        while len(body) < self._max_response_bytes:
            data = await self._reader.read(self._max_response_bytes - len(body))
            if not data:
                break
            body += data
        return bytes(body)


def body_request(url: httpx.URL, body: bytes, headers: Iterable[tuple[bytes, bytes]]) -> httpx.Request:
    """A POST `httpx.Request` with Host and Content-Length set here, as `httpx.Request(content=...)` would.

    httpx's own preparation (encoding the content, merging default headers) costs several times more, and
    showed in the listener's profile under load (docs/benchmark.md).
    """
    fields = [(b"Host", url.netloc), *headers, (b"Content-Length", b"%d" % len(body))]
    return httpx.Request("POST", url, headers=fields, stream=httpx.ByteStream(body))


def _origin(request: httpx.Request) -> Origin:
    url = request.url
    default_port = _DEFAULT_PORTS.get(url.scheme)
    if default_port is None:
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}", request=request)
    return url.scheme, url.host, url.port or default_port


def _serialise(request: httpx.Request, body: bytes) -> bytes:
    """Request line, headers (httpx.Request already added Host) and body, for one write."""
    lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
    lines += [name + b": " + value for name, value in request.headers.raw if name.lower() not in _OURS]
    lines.append(b"Content-Length: %d" % len(body))
    head = b"\r\n".join(lines)
    # Every CR and LF must be one of our line breaks: one inside a header would inject headers of its own.
    if head.count(b"\r") != len(lines) - 1 or head.count(b"\n") != len(lines) - 1:
        raise httpx.LocalProtocolError("CR or LF inside a request header", request=request)
    return head + _END_OF_HEAD + body


def _parse_head(data: bytes) -> _Head:
    status_line, *lines = data[: -len(_END_OF_HEAD)].split(_CRLF)
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise _Malformed(f"malformed status line {status_line[:80]!r}")
    version, status, reason = match.group(1), int(match.group(2)), match.group(3) or b""
    fields = _parse_fields(lines)
    content_length, chunked, keep_alive = _framing(version, fields)
    return _Head(version, status, reason, fields, content_length, chunked, keep_alive)


def _parse_fields(lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    fields: list[tuple[bytes, bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            # Obsolete line folding: RFC 9112 §5.2 has a user agent replace it with a space.
            name, value = fields[-1]
            fields[-1] = (name, value + b" " + line.strip(_OWS))
            continue
        name, colon, value = line.partition(b":")
        if not colon or _FIELD_NAME.fullmatch(name) is None:
            raise _Malformed(f"malformed header line {line[:80]!r}")
        fields.append((name, value.strip(_OWS)))
    return fields


def _framing(version: bytes, fields: list[tuple[bytes, bytes]]) -> tuple[int | None, bool, bool]:
    """Content-Length (None if absent or overridden), chunked or not, keep-alive or not (RFC 9112 §6, §9)."""
    lengths: set[bytes] = set()
    codings: list[bytes] = []
    options: set[bytes] = set()
    for name, value in fields:
        key = name.lower()
        if key == b"content-length":
            lengths.update(part.strip(_OWS) for part in value.split(b","))
        elif key == b"transfer-encoding":
            codings += [part.strip(_OWS).lower() for part in value.split(b",")]
        elif key == b"connection":
            options.update(part.strip(_OWS).lower() for part in value.split(b","))
    keep_alive = b"keep-alive" in options if version == b"HTTP/1.0" else b"close" not in options
    if codings:
        # Transfer-Encoding overrides Content-Length; a message with both is suspect, so its connection ends.
        # Not chunked last: the body runs until the server closes.
        return None, codings[-1] == b"chunked", keep_alive and not lengths
    if not lengths:
        return None, False, keep_alive
    if len(lengths) != 1:
        raise _Malformed(f"conflicting Content-Length values {b','.join(sorted(lengths))[:80]!r}")
    (length,) = lengths
    if not (length.isdigit() and len(length) <= 18):
        raise _Malformed(f"invalid Content-Length {length[:40]!r}")
    return int(length), False, keep_alive


def _chunk_size(line: bytes) -> int:
    size = line[: -len(_CRLF)].partition(b";")[0].strip(_OWS)  # chunk extensions are ignored
    if _CHUNK_SIZE.fullmatch(size) is None:
        raise _Malformed(f"invalid chunk size {size[:40]!r}")
    return int(size, 16)


def _protocol_fault(exc: BaseException) -> str:
    if isinstance(exc, asyncio.IncompleteReadError):
        return "server closed the connection in the middle of its response"
    if isinstance(exc, asyncio.LimitOverrunError):
        return "response head or chunk-size line longer than 64 KiB"
    return str(exc)


def _describe(exc: OSError) -> str:
    return str(exc) or type(exc).__name__
