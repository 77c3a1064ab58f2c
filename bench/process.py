"""Starting and stopping the benchmark's daemons: logs to files, bounded waits, nothing left running."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(
    argv: Sequence[str], log: Path, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start a daemon in its own process group, output appended to `log`."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,  # its own group, so stop() reaches the children it forks
        )


async def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int | None:
    """SIGTERM the process group, wait, SIGKILL it if it hangs on."""
    if proc.poll() is not None:
        return proc.returncode
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 5)
    return proc.returncode


async def wait_smtp(
    host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Until the server answers a connection with a 220 banner; raise with a reason otherwise."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before listening on {host}:{port}")
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            banner = await asyncio.wait_for(reader.readline(), 5)
            writer.write(b"QUIT\r\n")
            writer.close()
            if banner.startswith(b"220"):
                return
            last = RuntimeError(f"banner {banner!r}")
        except (OSError, TimeoutError) as exc:
            last = exc
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no SMTP banner on {host}:{port} within {timeout:.0f}s: {last}")


async def wait_tcp(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until something accepts connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before listening on {host}:{port}")
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
            writer.close()
            return
        except (OSError, TimeoutError):
            await asyncio.sleep(0.1)
    raise RuntimeError(f"nothing listening on {host}:{port} within {timeout:.0f}s")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
