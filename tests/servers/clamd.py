"""A real clamd on 127.0.0.1:<free port> and a unix socket, loaded with fixtures/clamav's signature DB only.

freshclam cannot reach the internet here, so the DB is ours: EICAR and a harmless marker string. clamd
reports their names with ".UNOFFICIAL" appended (see EICAR_NAME / MARKER_NAME).

Fixtures:
- `clamd_server` (session): one daemon for the whole run.
- `clamd_killable` (function): a private daemon a test may `kill()` during traffic and `start()` again.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import string
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.daemon import (
    FIXTURES,
    DaemonProcess,
    ManagedServer,
    find_binary,
    free_port,
    running_in_tempdir,
)

CLAMAV_FIXTURES = FIXTURES / "clamav"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_NAME = "Postroom.Test.EICAR.UNOFFICIAL"
MARKER = b"POSTROOM-HARMLESS-TEST-MARKER-3c9e1f"
MARKER_NAME = "Postroom.Test.Marker.UNOFFICIAL"
# Small on purpose, so oversize handling is tested with a 1 MiB message rather than 25 MiB.
STREAM_MAX_LENGTH = 1024 * 1024


class ClamdServer(ManagedServer):
    def __init__(self, workdir: Path, stream_max_length: int = STREAM_MAX_LENGTH) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.socket_path = workdir / "clamd.sock"
        self.stream_max_length = stream_max_length
        database_dir = workdir / "db"
        database_dir.mkdir()
        shutil.copy(CLAMAV_FIXTURES / "postroom-test.ndb", database_dir)
        log_file = workdir / "clamd.log"
        template = string.Template((CLAMAV_FIXTURES / "clamd.conf.template").read_text())
        config = workdir / "clamd.conf"
        config.write_text(
            template.substitute(
                LOG_FILE=log_file,
                PID_FILE=workdir / "clamd.pid",
                TEMP_DIR=workdir,
                DATABASE_DIR=database_dir,
                SOCKET_PATH=self.socket_path,
                TCP_PORT=self.port,
                STREAM_MAX_LENGTH=stream_max_length,
            )
        )
        argv = [find_binary("clamd"), "--config-file", str(config)]
        self.process = DaemonProcess("clamd", argv, ready=self.ping, log_file=log_file, start_timeout=30)

    @property
    def tcp_address(self) -> str:
        """The `[filters.clamav] address` for TCP."""
        return f"{self.host}:{self.port}"

    @property
    def unix_address(self) -> str:
        """The `[filters.clamav] address` for the unix socket."""
        return f"unix:{self.socket_path}"

    def ping(self) -> bool:
        """Both sockets answer PING (clamd opens them one after the other)."""
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0) as tcp:
                tcp.sendall(b"zPING\0")
                if tcp.recv(16) != b"PONG\0":
                    return False
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
                unix.settimeout(1.0)
                unix.connect(str(self.socket_path))
                unix.sendall(b"zPING\0")
                return unix.recv(16) == b"PONG\0"
        except OSError:
            return False


def running_clamd() -> contextlib.AbstractContextManager[ClamdServer]:
    """A started clamd in its own temp dir, stopped on exit."""
    return running_in_tempdir(ClamdServer, "postroom-clamd-")


@pytest.fixture(scope="session")
def clamd_server() -> Iterator[ClamdServer]:
    with running_clamd() as server:
        yield server


@pytest.fixture
def clamd_killable() -> Iterator[ClamdServer]:
    with running_clamd() as server:
        yield server
