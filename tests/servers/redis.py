"""A real redis-server on 127.0.0.1:<free port>, no persistence, for the shared-state tests.

Fixtures:
- `redis_server` (session): one server for the whole run; tests keep apart by key prefix or `flush()`.
- `redis_killable` (function): a private server a test may `kill()` and `start()` again.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.daemon import DaemonProcess, ManagedServer, find_binary, free_port, running_in_tempdir


class RedisServer(ManagedServer):
    def __init__(self, workdir: Path) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.url = f"redis://{self.host}:{self.port}/0"
        log_file = workdir / "redis.log"
        argv = [
            find_binary("redis-server"),
            "--bind", self.host,
            "--port", str(self.port),
            "--save", "",
            "--appendonly", "no",
            "--dir", str(workdir),
            "--logfile", str(log_file),
            "--protected-mode", "yes",
        ]  # fmt: skip
        self.process = DaemonProcess("redis-server", argv, ready=self.ping, log_file=log_file)

    def ping(self) -> bool:
        try:
            return _command(self.host, self.port, b"PING\r\n") == b"+PONG\r\n"
        except OSError:
            return False

    def flush(self) -> None:
        """Drop every key, so a test starts from an empty store."""
        if _command(self.host, self.port, b"FLUSHALL\r\n") != b"+OK\r\n":
            raise RuntimeError("redis FLUSHALL failed")


def _command(host: str, port: int, command: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=1.0) as sock:
        sock.sendall(command)
        return sock.recv(64)


def running_redis() -> contextlib.AbstractContextManager[RedisServer]:
    """A started server in its own temp dir, stopped on exit."""
    return running_in_tempdir(RedisServer, "postroom-redis-")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def redis_killable() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server
