"""A small native asyncio client for clamd's INSTREAM command (unix socket or TCP).

Why not the `clamd` package: its client is blocking. On the event loop one scan would stall every SMTP
session; in a thread, a timed-out scan cannot be cancelled and keeps its socket and thread until clamd
answers. This client is cancellable at every await, so the chain's timeout really ends the scan.

Protocol (clamd(8)): send ``zINSTREAM\\0``, then chunks each prefixed by their length as a 4-byte
big-endian integer, then a zero-length chunk; clamd answers one NUL-terminated line:
``stream: OK``, ``stream: <signature> FOUND`` or ``<message> ERROR``.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

from postroom.core.configload import parse_hostport

_MAX_REPLY = 4096
_TERMINATOR = struct.pack(">I", 0)


class ClamdError(Exception):
    """clamd could not scan: unreachable, closed the connection, or answered ERROR."""


class ClamdUnavailable(ClamdError):
    """No connection to clamd (refused, no socket file, unreachable)."""


@dataclass(frozen=True, slots=True)
class ScanResult:
    found: bool
    signature: str | None = None


@dataclass(frozen=True, slots=True)
class ClamdAddress:
    """`unix:/path/to/clamd.ctl` or `host:port`."""

    unix_path: str | None = None
    host: str = ""
    port: int = 0

    @classmethod
    def parse(cls, value: str) -> ClamdAddress:
        if value.startswith("unix:"):
            path = value.removeprefix("unix:")
            if not path.startswith("/"):
                raise ValueError(f"unix socket path must be absolute, got {value!r}")
            return cls(unix_path=path)
        try:
            host, port = parse_hostport(value, "address")
        except ValueError:
            raise ValueError(f"expected unix:/path or host:port, got {value!r}") from None
        return cls(host=host, port=port)

    def __str__(self) -> str:
        return f"unix:{self.unix_path}" if self.unix_path else f"{self.host}:{self.port}"


class ClamdClient:
    """One INSTREAM scan per connection (clamd closes the stream after answering)."""

    def __init__(self, address: ClamdAddress, chunk_size: int = 64 * 1024) -> None:
        if chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        self.address = address
        self.chunk_size = chunk_size

    async def instream(self, data: bytes) -> ScanResult:
        reader, writer = await self._connect()
        try:
            send_error = await self._send(writer, data)
            try:
                reply = await reader.readuntil(b"\0")
            except asyncio.IncompleteReadError as exc:
                # clamd may stop reading and answer early (e.g. size limit); only a silent close is fatal.
                detail = f": {send_error}" if send_error else ""
                raise ClamdError(f"clamd closed the connection without a reply{detail}") from exc
            except asyncio.LimitOverrunError as exc:
                raise ClamdError("clamd reply too long") from exc
            except ConnectionError as exc:
                # clamd answered early (its size limit) and closed while we were still writing: the kernel
                # resets the connection and may drop the reply. Still clamd's refusal to scan, not an outage.
                raise ClamdError(f"clamd reset the connection mid-stream (size limit?): {exc}") from exc
        finally:
            writer.close()
        return parse_reply(reply.rstrip(b"\0").decode("utf-8", "replace"))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            if self.address.unix_path is not None:
                return await asyncio.open_unix_connection(self.address.unix_path, limit=_MAX_REPLY)
            return await asyncio.open_connection(self.address.host, self.address.port, limit=_MAX_REPLY)
        except OSError as exc:
            raise ClamdUnavailable(
                f"cannot connect to clamd at {self.address}: {exc.strerror or exc}"
            ) from exc

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> OSError | None:
        """Write the stream; a write error is returned, not raised, so clamd's own reply can be read."""
        view = memoryview(data)
        # One write per chunk, command and terminator included: each write is a send() on the socket, and
        # separate ones for the command and the terminator showed in the listener's profile.
        prefix = b"zINSTREAM\0"
        try:
            for start in range(0, len(view), self.chunk_size):
                chunk = view[start : start + self.chunk_size]
                last = start + self.chunk_size >= len(view)
                writer.write(
                    b"".join((prefix, struct.pack(">I", len(chunk)), chunk, _TERMINATOR if last else b""))
                )
                prefix = b""
                await writer.drain()  # bounded buffering: never more than one chunk queued
            if prefix:  # an empty message: the command and the terminator alone
                writer.write(prefix + _TERMINATOR)
                await writer.drain()
        except OSError as exc:
            return exc
        return None


def parse_reply(line: str) -> ScanResult:
    """Interpret clamd's reply to INSTREAM; anything but OK/FOUND is an error."""
    if line.endswith(" ERROR"):
        raise ClamdError(f"clamd error: {line.removesuffix(' ERROR')}")
    body = line.removeprefix("stream: ")
    if body == "OK":
        return ScanResult(found=False)
    if body.endswith(" FOUND"):
        return ScanResult(found=True, signature=body.removesuffix(" FOUND"))
    raise ClamdError(f"unexpected clamd reply: {line[:200]!r}")
