"""Receiving MXs for the delivery tests: aiosmtpd servers on several 127.x addresses, one shared port.

Each address plays the MX named for it in fixtures/dns/zones/dest.test.zone. Every server records what it
received and meters its connections: a connection counts from accept until the client's QUIT (or the drop),
so the count a server sees never lags behind the client — a client frees its slot only after the 221.

Recipient rules on every server: a local part starting with "bad" gets 550 5.1.1, "soft" 451 4.2.0 every
time, "grey" 451 4.7.1 the first time and 250 after. The greylisting MX (127.0.0.24) answers every new
recipient 451 once; the rejecting MX (127.0.0.25) answers 550 5.1.1 to everyone.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

from postroom.app.config import Config, config_from_mapping
from postroom.core.spool import Spool
from tests.outbound.submission_fixtures import write_self_signed
from tests.servers.dns import DnsServer

MX_MULTI_1, MX_MULTI_2, MX_A_ONLY = "127.0.0.21", "127.0.0.22", "127.0.0.23"
MX_GREYLIST, MX_REJECT = "127.0.0.24", "127.0.0.25"
MX_BURST, MX_WIDE, MX_BAD_TLS, MX_DOWN = "127.0.0.26", "127.0.0.27", "127.0.0.28", "127.0.0.29"
MX_SENDERS, MX_CRASH = "127.0.0.30", "127.0.0.31"
NO_STARTTLS = {MX_MULTI_2}  # for require_tls: this MX never offers STARTTLS
MODES = {MX_GREYLIST: "greylist", MX_REJECT: "reject"}
BROKEN_TLS = {MX_BAD_TLS}  # offers STARTTLS but demands a client certificate: the handshake fails
LISTENING = (
    MX_MULTI_1,
    MX_MULTI_2,
    MX_A_ONLY,
    MX_GREYLIST,
    MX_REJECT,
    MX_BURST,
    MX_WIDE,
    MX_BAD_TLS,
    MX_SENDERS,
    MX_CRASH,
)
SENDER = "helpdesk@senders.dest.test"

# Apart from the webhook secret: the runner must sign VERP addresses with this one (32+ bytes, as `serve`
# requires of every signing key).
VERP_SECRET = "test-verp-secret-0123456789abcdef0123"


@dataclass(frozen=True)
class Received:
    mx: str
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls: bool
    connection: int


class VirtualTime:
    """A clock that only moves when someone sleeps on it, so rate tests take no real time."""

    def __init__(self, on_sleep: Callable[[], None] | None = None) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []  # when each sleep began
        self._on_sleep = on_sleep

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(self.now)
        if self._on_sleep is not None:
            self._on_sleep()
        self.now += max(seconds, 0.0)
        await asyncio.sleep(0)


class ConnectionMeter:
    """Open connections now and the most seen at once (thread-safe: each server runs its own thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current = 0
        self.peak = 0
        self.total = 0

    def opened(self) -> int:
        with self._lock:
            self.current += 1
            self.total += 1
            self.peak = max(self.peak, self.current)
            return self.total

    def closed(self) -> None:
        with self._lock:
            self.current -= 1

    def reset(self) -> None:
        with self._lock:
            self.peak = self.current
            self.total = 0


@dataclass
class MxFarm:
    port: int
    meters: dict[str, ConnectionMeter]
    everything: ConnectionMeter = field(default_factory=ConnectionMeter)
    received: list[Received] = field(default_factory=list)
    delay: float = 0.0  # seconds each DATA takes, to make sessions overlap in burst tests
    _seen: set[tuple[str, str]] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.received.clear()
            self._seen.clear()
            self.delay = 0.0
        for meter in (*self.meters.values(), self.everything):
            meter.reset()

    def at(self, mx: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.mx == mx]

    def record(self, received: Received) -> None:
        with self._lock:
            self.received.append(received)

    def first_time(self, mx: str, rcpt: str) -> bool:
        with self._lock:
            key = (mx, rcpt.lower())
            new = key not in self._seen
            self._seen.add(key)
            return new


class RecordingHandler:
    def __init__(self, farm: MxFarm, mx: str) -> None:
        self.farm = farm
        self.mx = mx
        self.mode = MODES.get(mx, "normal")

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        local = address.partition("@")[0].lower()
        if self.mode == "reject" or local.startswith("bad"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if local.startswith("soft"):
            return "451 4.2.0 Mailbox temporarily unavailable"
        if (self.mode == "greylist" or local.startswith("grey")) and self.farm.first_time(self.mx, address):
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.farm.delay:
            await asyncio.sleep(self.farm.delay)
        self.farm.record(
            Received(
                self.mx,
                envelope.mail_from,
                tuple(envelope.rcpt_tos),
                envelope.original_content,
                session.ssl is not None,
                getattr(server, "connection_number", 0),
            )
        )
        return "250 2.0.0 Ok: queued"


class MeteredSMTP(SMTP):
    def __init__(self, handler: Any, *, meters: tuple[ConnectionMeter, ...], **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._meters = meters
        self._open = False
        self.connection_number = 0

    def connection_made(self, transport: Any) -> None:
        first = not self._open and self.transport is None
        super().connection_made(transport)
        if first:  # not the second call that STARTTLS makes
            self._open = True
            self.connection_number = self._meters[0].opened()
            for meter in self._meters[1:]:
                meter.opened()

    def connection_lost(self, error: Exception | None) -> None:
        self._end()
        super().connection_lost(error)

    async def smtp_QUIT(self, arg: str) -> None:
        self._end()  # before the 221: the client frees its slot only after reading it
        await super().smtp_QUIT(arg)

    def _end(self) -> None:
        if self._open:
            self._open = False
            for meter in self._meters:
                meter.closed()


class MeteredController(Controller):
    def __init__(self, handler: RecordingHandler, meters: tuple[ConnectionMeter, ...], **kwargs: Any) -> None:
        self._meters = meters
        super().__init__(handler, **kwargs)

    def factory(self) -> MeteredSMTP:
        return MeteredSMTP(self.handler, meters=self._meters, **self.SMTP_kwargs)


def shared_port(addresses: tuple[str, ...]) -> int:
    """A TCP port free on every address (each MX listens on its own 127.x address, same port)."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            port: int = probe.getsockname()[1]
        try:
            for address in addresses:
                with socket.socket() as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no TCP port free on all the test MX addresses")


@pytest.fixture(scope="session")
def mx_farm_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MxFarm]:
    files = write_self_signed(tmp_path_factory.mktemp("mx-tls"))
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(files.cert, files.key)
    broken_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(files.cert))
    broken_tls.load_cert_chain(files.cert, files.key)
    broken_tls.verify_mode = ssl.CERT_REQUIRED
    port = shared_port(LISTENING)
    farm = MxFarm(port, {mx: ConnectionMeter() for mx in LISTENING})
    controllers = []
    for mx in LISTENING:
        controller = MeteredController(
            RecordingHandler(farm, mx),
            (farm.meters[mx], farm.everything),
            hostname=mx,
            port=port,
            server_hostname=f"mx-{mx}.dest.test",
            tls_context=None if mx in NO_STARTTLS else broken_tls if mx in BROKEN_TLS else tls,
            ready_timeout=10.0,
        )
        controller.start()
        controllers.append(controller)
    try:
        yield farm
    finally:
        for controller in controllers:
            controller.stop()


@pytest.fixture
def mx_farm(mx_farm_servers: MxFarm) -> MxFarm:
    mx_farm_servers.reset()
    return mx_farm_servers


def delivery_settings(tmp_path: Path, dns: DnsServer, port: int, **outbound: Any) -> dict[str, Any]:
    """Config settings whose outbound relay resolves through the test DNS server and delivers to `port`."""
    settings: dict[str, Any] = {
        "smtp_port": port,
        "bounce_domain": "bounces.postroom.test",
        "verp_secret": VERP_SECRET,
        "helo_name": "relay.postroom.test",
        "retry_initial": 0.2,
        "retry_max_interval": 0.5,
        "connect_timeout": 5.0,
        "command_timeout": 10.0,
        **outbound,
    }
    return {
        "spool": {"path": str(tmp_path / "spool"), "min_free_bytes": 0},
        "dns": {"nameservers": [dns.nameserver], "timeout": 2.0},
        "webhook": {"secret": VERP_SECRET},
        "outbound": settings,
    }


def delivery_config(tmp_path: Path, dns: DnsServer, port: int, **outbound: Any) -> Config:
    return config_from_mapping(delivery_settings(tmp_path, dns, port, **outbound))


def outbound_spool(cfg: Config, *, fsync: bool = True) -> Spool:
    return Spool(cfg.outbound.spool_dir(cfg.spool.path), min_free_bytes=0, fsync=fsync).create()


def message(seq: int | str, *, sender: str = SENDER, to: str = "someone@multi.dest.test") -> bytes:
    return (
        f"From: Helpdesk <{sender}>\r\nTo: <{to}>\r\nSubject: Ticket {seq} was updated\r\n"
        f"Message-ID: <msg-{seq}@senders.dest.test>\r\nX-Test-Seq: {seq}\r\n\r\nHello {seq}.\r\n"
    ).encode()


def outbound_entry(
    rcpts: list[str], *, seq: int | str = 1, sender: str = SENDER
) -> tuple[dict[str, Any], bytes]:
    """One spool entry the way the submission side stores it (one per message and recipient domain)."""
    domain = rcpts[0].rpartition("@")[2]
    meta = {
        "kind": "outbound",
        "mail_from": sender,
        "rcpt_to": rcpts,
        "domain": domain,
        "submitted_by": "helpdesk",
        "message_id": f"<msg-{seq}@senders.dest.test>",
        "client_ip": "127.0.0.1",
    }
    return meta, message(seq, sender=sender or "nobody@senders.dest.test", to=rcpts[0])


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(interval)
