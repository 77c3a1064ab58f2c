"""Running Postroom for tests: in-process (most tests) or as a real `postroom serve` subprocess (kill -9)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postroom.app.config import Config, config_from_mapping
from postroom.app.serve import Postroom

SECRET = "test-secret-0123456789abcdef0123456789"  # `serve` wants 32 bytes or more
PR_SET_PDEATHSIG = 1  # prctl(2)
DOMAIN = "helpdesk.test"
REPO = Path(__file__).resolve().parents[2]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def config_mapping(
    spool_dir: Path, webhook_url: str, port: int | None = None, **sections: Any
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "smtp": {"listen": f"127.0.0.1:{port or free_port()}", "hostname": "mx.helpdesk.test"},
        "routing": {"domains": [DOMAIN]},
        "spool": {"path": str(spool_dir), "min_free_bytes": 0},
        "webhook": {"url": webhook_url, "secret": SECRET, "retry_initial": 0.2, "retry_max_interval": 0.5},
        "delivery": {"normalize_workers": 0, "rescan_interval": 0.2, "shutdown_grace": 2.0},
        "logging": {"level": "warning"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    return data


def make_config(spool_dir: Path, webhook_url: str, **sections: Any) -> Config:
    return config_from_mapping(config_mapping(spool_dir, webhook_url, **sections))


@contextlib.asynccontextmanager
async def running(config: Config) -> AsyncIterator[Postroom]:
    app = await Postroom.build(config)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


def smtp_port(config: Config) -> int:
    return int(config.smtp.listen.rsplit(":", 1)[1])


def message(subject: str = "Help", body: str = "Please help.\n", sender: str = "ada@example.org") -> bytes:
    return (
        f"From: Ada <{sender}>\r\nTo: support@acme.{DOMAIN}\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '-')}@example.org>\r\n\r\n{body}"
    ).encode()


@dataclass
class SendResult:
    code: int
    text: str
    refused: dict[str, tuple[int, bytes]]


def send(
    port: int,
    rcpts: list[str],
    raw: bytes | None = None,
    *,
    sender: str = "ada@example.org",
    source_ip: str | None = None,
    helo: str = "client.example.org",
) -> SendResult:
    """One SMTP transaction with smtplib; returns the DATA reply (or the first refusal)."""
    source = (source_ip, 0) if source_ip else None
    try:
        client = smtplib.SMTP("127.0.0.1", port, timeout=30, source_address=source)
    except smtplib.SMTPConnectError as exc:
        return SendResult(exc.smtp_code, exc.smtp_error.decode(errors="replace"), {})
    with client:
        code, reply = client.ehlo(helo)
        if code != 250:
            return SendResult(code, reply.decode(errors="replace"), {})
        try:
            refused = client.sendmail(sender, rcpts, raw if raw is not None else message())
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return SendResult(code, text.decode(), dict(exc.recipients))
        except smtplib.SMTPResponseException as exc:
            return SendResult(exc.smtp_code, exc.smtp_error.decode(errors="replace"), {})
        # smtplib hides the DATA reply on success; the NOOP keeps the session honest.
        client.noop()
        return SendResult(250, "", dict(refused))


def send_raw_dialogue(port: int, lines: list[str], *, timeout: float = 10.0) -> list[str]:
    """Speak SMTP by hand (for replies smtplib hides); returns each reply line as received."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        reader = sock.makefile("rb")
        replies = [reader.readline().decode().rstrip()]
        for line in lines:
            sock.sendall(line.encode() + b"\r\n")
            while True:
                reply = reader.readline().decode().rstrip()
                replies.append(reply)
                if len(reply) < 4 or reply[3] != "-":
                    break
        return replies


def die_with_parent() -> None:
    """In the child before exec: SIGKILL when the test process dies, so no server outlives a test run."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class ServeProcess:
    """`postroom serve` as a child process, for crash tests."""

    def __init__(self, config_path: Path, port: int, log_path: Path) -> None:
        self.config_path = config_path
        self.port = port
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "postroom.app.cli", "serve", "--config", str(self.config_path)],
            stdout=log,
            stderr=log,
            cwd=REPO,
            env=env,
            preexec_fn=die_with_parent,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postroom serve exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.05)
        raise RuntimeError("postroom serve did not start listening")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


@contextlib.contextmanager
def serve_process(config_path: Path, port: int, log_path: Path) -> Iterator[ServeProcess]:
    proc = ServeProcess(config_path, port, log_path)
    proc.start()
    try:
        yield proc
    finally:
        if proc.proc is not None and proc.proc.poll() is None:
            proc.terminate()
