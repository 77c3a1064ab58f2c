"""How many signed tickets per second a receiver takes: bench.receiver against postroom.helpdesk.receiver.

The benchmark's receiver must never be the bottleneck, so this measures both receivers with the same
keep-alive client (a raw asyncio HTTP/1.1 client, 8 connections, 1.5 KB and 20 KB JSON bodies). Each
receiver runs in its own process, as in the benchmark.

python -m bench.receiver_speed [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from bench.messages import MARKER_RE
from bench.process import free_port, spawn, stop, wait_tcp
from bench.systems import REPO
from postroom.core.signing import sign

SECRET = "speed-test"
SERVERS = {
    "bench.receiver": ["-m", "bench.receiver", "--no-control", "--secret", SECRET, "--port"],
    "postroom.helpdesk.receiver": ["-m", "postroom.helpdesk.receiver", "--secret", SECRET, "--port"],
}


def _request(seq: int, size: int) -> bytes:
    body = json.dumps({"subject": f"pbmspeedx{seq:07d}", "text": "x" * size}).encode()
    assert MARKER_RE.search(body)
    head = (
        f"POST /tickets HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nIdempotency-Key: k{seq}\r\n"
        f"X-Postroom-Signature: {sign(SECRET, body, int(time.time()))}\r\n\r\n"
    )
    return head.encode() + body


async def _client(port: int, requests: list[bytes]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for request in requests:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.decode(errors="replace"))
        lengths = [line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")]
        await reader.readexactly(int(lengths[0].split(b":")[1]))
    writer.close()


async def measure(name: str, total: int, size: int, connections: int = 8) -> float:
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="receiver-speed-")[1])
    proc = spawn([sys.executable, *SERVERS[name], str(port)], log, cwd=REPO)
    try:
        await wait_tcp("127.0.0.1", port, 20, proc)
        requests = [_request(i, size) for i in range(total)]
        started = time.monotonic()
        await asyncio.gather(*(_client(port, requests[i::connections]) for i in range(connections)))
        return total / (time.monotonic() - started)
    finally:
        await stop(proc)
        log.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.receiver_speed")
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    for size in (1500, 20000):
        for name in SERVERS:
            rate = asyncio.run(measure(name, args.requests, size))
            print(f"{name:17} {size:>6}-byte bodies: {rate:8,.0f} requests/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
