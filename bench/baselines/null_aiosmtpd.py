"""Baseline (b): aiosmtpd with a handler that does nothing — the ceiling for a Python SMTP server.

It answers every DATA with "250 2.0.0 Ok: queued as <n>" and keeps nothing. On uvloop by default because
Postroom runs on uvloop; --asyncio measures the standard loop.

python -m bench.baselines.null_aiosmtpd --port 2526 [--asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys
from typing import Any

from aiosmtpd.smtp import SMTP


class NullHandler:
    def __init__(self) -> None:
        self._ids = itertools.count(1)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        return f"250 2.0.0 Ok: queued as N{next(self._ids)}"


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    handler = NullHandler()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="null.bench.test", ident="null-aiosmtpd"), host, port
    )
    stopping = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    print(f"listening on {host}:{port}", flush=True)
    await stopping.wait()
    server.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baselines.null_aiosmtpd")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--asyncio", action="store_true", help="the standard event loop instead of uvloop")
    args = parser.parse_args(argv)
    if not args.asyncio:
        import uvloop

        uvloop.install()
    asyncio.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
