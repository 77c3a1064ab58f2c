"""The benchmark's helpdesk: a lean HTTP/1.1 endpoint that verifies, dedupes and timestamps tickets.

Why not postroom.helpdesk.receiver.TicketReceiver: that one keeps every request (headers, body, parsed JSON)
for the
tests to inspect and parses the JSON; the benchmark needs only an arrival time per message and must not
become
the bottleneck, so this one verifies the signature (postroom.core.signing, the reference implementation),
finds the
message's marker with one regex over the body, and keeps nothing else. docs/benchmark.md has both measured.

Run as its own process (a helpdesk is another machine; sharing the load generator's event loop would skew
both). The driver controls it with one command per line on stdin and reads one JSON line per command on
stdout: `stats [marker prefix]`, `dump` (marker -> [arrival monotonic time, idempotency key]), `reset`,
`down` (stop listening and drop connections, as a crashed helpdesk), `up`, `quit`.

python -m bench.receiver --port 8025 --secret S
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import cast

from bench.messages import MARKER_RE
from postroom.core.signing import SIGNATURE_HEADER, verify

_SIGNATURE = SIGNATURE_HEADER.lower().encode()
_OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
_MAX_HEAD = 64 * 1024


def _answer(status: int, reason: str) -> bytes:
    body = json.dumps({"error": reason}).encode()
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


@dataclass
class Tally:
    arrivals: dict[str, tuple[float, str]] = field(default_factory=dict)  # marker -> (monotonic, key)
    keys: set[str] = field(default_factory=set)
    requests: int = 0
    duplicates: int = 0  # a key seen before: a retry after a lost answer, or a double delivery
    bad_signature: int = 0
    no_marker: int = 0
    body_bytes: int = 0

    def stats(self) -> dict[str, object]:
        return {
            "unique": len(self.arrivals),
            "requests": self.requests,
            "duplicates": self.duplicates,
            "bad_signature": self.bad_signature,
            "no_marker": self.no_marker,
            "body_bytes": self.body_bytes,
        }


class _HttpProtocol(asyncio.Protocol):
    def __init__(self, receiver: BenchReceiver) -> None:
        self.receiver = receiver
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.receiver.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.receiver.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None and not self.transport.is_closing():
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buffer) > _MAX_HEAD:
                    self._close(_answer(431, "head too large"))
                return
            headers = _headers(bytes(self.buffer[:end]))
            if b"transfer-encoding" in headers:
                self._close(_answer(501, "send Content-Length"))
                return
            length = int(headers.get(b"content-length", b"0") or 0)
            if len(self.buffer) < end + 4 + length:
                return  # the rest of the body is still on its way
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self.transport.write(self.receiver.handle(headers, body))

    def _close(self, answer: bytes) -> None:
        assert self.transport is not None
        self.transport.write(answer)
        self.transport.close()


def _headers(head: bytes) -> dict[bytes, bytes]:
    """Lower-cased header names to values; the request line is skipped."""
    out = {}
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        out[name.strip().lower()] = value.strip()
    return out


class BenchReceiver:
    def __init__(self, secret: str, host: str, port: int) -> None:
        self.secret = secret
        self.host = host
        self.port = port
        self.tally = Tally()
        self.connections: set[_HttpProtocol] = set()
        self.server: asyncio.Server | None = None

    def handle(self, headers: dict[bytes, bytes], body: bytes) -> bytes:
        tally = self.tally
        tally.requests += 1
        tally.body_bytes += len(body)
        signature = headers.get(_SIGNATURE, b"").decode("latin-1")
        if not verify(self.secret, body, signature, now=time.time()):
            tally.bad_signature += 1
            return _answer(401, "invalid signature")
        arrived = time.monotonic()
        match = MARKER_RE.search(body)
        marker = match.group().decode() if match else ""
        key = headers.get(b"idempotency-key", b"").decode("latin-1")
        dedupe_key = key or marker  # without the header, the marker still catches a double delivery
        if dedupe_key in tally.keys:
            tally.duplicates += 1
            return _OK
        tally.keys.add(dedupe_key)
        if marker:
            tally.arrivals[marker] = (arrived, key)
        else:
            tally.no_marker += 1
        return _OK

    async def up(self) -> None:
        if self.server is None:
            loop = asyncio.get_running_loop()
            self.server = await loop.create_server(
                lambda: _HttpProtocol(self), self.host, self.port, reuse_address=True, backlog=1024
            )
            self.port = self.server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        if self.server is not None:
            self.server.close()
            for protocol in list(self.connections):
                if protocol.transport is not None:
                    protocol.transport.abort()
            await self.server.wait_closed()
            self.server = None

    async def command(self, line: str) -> dict[str, object]:
        match line.split():
            case ["stats"]:
                return self.tally.stats()
            case ["stats", prefix]:
                # One phase's tickets only: a straggler from an earlier phase must not make it look done.
                matching = sum(1 for marker in self.tally.arrivals if marker.startswith(prefix))
                return {**self.tally.stats(), "matching": matching}
            case ["dump"]:
                return {m: [t, k] for m, (t, k) in self.tally.arrivals.items()}
            case ["reset"]:
                self.tally = Tally()
                return {"ok": True}
            case ["down"]:
                await self.down()
                return {"ok": True}
            case ["up"]:
                await self.up()
                return {"ok": True, "port": self.port}
            case _:
                return {"error": f"unknown command {line.strip()!r}"}


async def _control(receiver: BenchReceiver) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await receiver.up()
    print(json.dumps({"ready": True, "port": receiver.port}), flush=True)
    while line := (await reader.readline()).decode():
        if line.strip() == "quit":
            break
        print(json.dumps(await receiver.command(line)), flush=True)
    await receiver.down()


async def _serve(receiver: BenchReceiver) -> None:
    """No control channel: serve until SIGTERM or SIGINT, then print the stats."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await receiver.up()
    await stopping.wait()
    await receiver.down()
    print(json.dumps(receiver.tally.stats()), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--no-control", action="store_true", help="ignore stdin; serve until SIGTERM")
    args = parser.parse_args(argv)
    from bench.loadgen import install_uvloop

    install_uvloop()
    receiver = BenchReceiver(args.secret, args.host, args.port)
    asyncio.run(_serve(receiver) if args.no_control else _control(receiver))
    return 0


if __name__ == "__main__":
    sys.exit(main())
