"""Running a real daemon for the test suite: find its binary, start it in the foreground, wait until it
answers, and stop or kill it.

Each daemon runs in its own process group so `kill()` takes its workers down too (rspamd forks workers that
would otherwise keep the listening sockets open and hide the "daemon died" fault the tests want).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
INSTALL_HINT = "install the test servers with tests/install-system-deps.sh"
_PR_SET_PDEATHSIG = 1
# Debian puts clamd in /usr/sbin, which is not on every user's PATH.
_EXTRA_BIN_DIRS = ("/usr/sbin", "/usr/bin", "/sbin")


def find_binary(name: str) -> str:
    """The daemon's path, or a test failure that says how to install it."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_EXTRA_BIN_DIRS))
    if found is None:
        pytest.fail(f"{name} is not installed: {INSTALL_HINT}", pytrace=False)
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(probe: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    """Call `probe` until it returns True or `timeout` seconds pass (bounded in time and count)."""
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / interval) + 1):
        if probe():
            return True
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    return False


def _die_with_test_run() -> None:
    """In the child before exec: if the test run dies (even by SIGKILL), the kernel kills the daemon too.

    This covers clamd, redis-server and Rspamd's main process; Rspamd's forked workers do not inherit it
    and outlive an interrupted run (harmless: every run binds fresh random ports)."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class DaemonProcess:
    """One foreground daemon process (group) with a readiness probe.

    `start()` may be called again after `stop()` or `kill()`: the same command, ports and directories are
    reused, so clients built against the first start keep working after a restart.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        ready: Callable[[], bool],
        log_file: Path,
        start_timeout: float = 30.0,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.ready = ready
        self.log_file = log_file
        self.start_timeout = start_timeout
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.last_start_seconds = 0.0

    def is_running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.is_running():
            return
        started = time.monotonic()
        with open(self.log_file.with_suffix(".stdout"), "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=_die_with_test_run if sys.platform == "linux" else None,
            )
        if not wait_until(self._ready_or_exited, timeout=self.start_timeout) or not self.is_running():
            self.stop()
            pytest.fail(
                f"{self.name} did not become ready within {self.start_timeout:g}s\n{self.diagnostics()}",
                pytrace=False,
            )
        self.last_start_seconds = time.monotonic() - started

    def _ready_or_exited(self) -> bool:
        return not self.is_running() or self.ready()

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM to the group, woken first if frozen), then SIGKILL if it lingers."""
        self._signal_group(signal.SIGTERM)
        self._signal_group(signal.SIGCONT)
        self._reap(timeout)

    def kill(self) -> None:
        """Simulate a crash: SIGKILL the whole process group, no clean-up by the daemon."""
        self._signal_group(signal.SIGKILL)
        self._reap(5.0)

    def freeze(self) -> None:
        """Simulate a hung daemon: SIGSTOP the group; the kernel still accepts connections, nobody answers."""
        self._signal_group(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_group(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _signal_group(self, sig: signal.Signals) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def _reap(self, timeout: float) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._signal_group(signal.SIGKILL)
            self.proc.wait(timeout=5.0)

    def diagnostics(self, lines: int = 30) -> str:
        """The tail of the daemon's log and captured output, for failure messages."""
        parts = []
        for path in (self.log_file, self.log_file.with_suffix(".stdout")):
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                parts.append(f"--- {path} ---\n" + "\n".join(tail))
        return "\n".join(parts) or f"(no output from {self.name})"


class ManagedServer:
    """Base of the test servers: lifecycle calls go to their `DaemonProcess`."""

    process: DaemonProcess
    port: int

    def ping(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()

    def kill(self) -> None:
        self.process.kill()

    def freeze(self) -> None:
        self.process.freeze()

    def thaw(self) -> None:
        self.process.thaw()


DaemonT = TypeVar("DaemonT", bound=ManagedServer)


@contextlib.contextmanager
def running_in_tempdir(start: Callable[[Path], DaemonT], prefix: str) -> Iterator[DaemonT]:
    """A daemon made by `start(workdir)` in its own temp dir, started, and stopped on exit."""
    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        server = start(Path(workdir))
        server.start()
        try:
            yield server
        finally:
            server.stop()
