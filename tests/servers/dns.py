"""A real authoritative DNS server (NSD) for the test suite, plus two fault injectors.

`dns_server` (session) runs `nsd -d` on 127.0.0.1:<free port> serving every fixtures/dns/zones/*.zone (the
zone name is the file's `$ORIGIN`), including a stub root zone so unknown names get a fast NXDOMAIN, and the
zones in SERVFAIL_ZONES, configured without data so NSD answers them with SERVFAIL. Rate limiting is off.

`unresponsive_dns` is a UDP socket that never answers (a DNS timeout); `counting_dns_proxy` forwards to NSD
and counts the queries it saw, so a test can prove that a cache avoided a lookup.
"""

from __future__ import annotations

import contextlib
import select
import shutil
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncresolver
import dns.exception
import dns.message
import dns.nameserver
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from postroom.core.config import DnsConfig

REPO = Path(__file__).resolve().parents[2]
ZONES_DIR = REPO / "fixtures" / "dns" / "zones"
# Zones served with SERVFAIL: NSD answers SERVFAIL for a configured zone whose data failed to load.
# broken._domainkey.reject.test makes one DKIM selector of an otherwise healthy domain fail temporarily.
SERVFAIL_ZONES = ("servfail.test", "broken._domainkey.reject.test")
INSTALL_HINT = "nsd is not installed: run tests/install-system-deps.sh (Debian package 'nsd')"
START_TIMEOUT = 5.0
HOST = "127.0.0.1"


@dataclass(frozen=True)
class DnsServer:
    """Where the test DNS server listens; `nameserver` is the `[dns] nameservers` entry for it."""

    host: str
    port: int
    log_path: Path | None = None

    @property
    def nameserver(self) -> str:
        return f"{self.host}:{self.port}"

    def dns_config(self, timeout: float = 2.0) -> DnsConfig:
        return DnsConfig(nameservers=[self.nameserver], timeout=timeout)

    def resolver(self, timeout: float = 2.0) -> dns.asyncresolver.Resolver:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(self.host, self.port)]
        resolver.lifetime = timeout
        resolver.timeout = timeout
        return resolver


def zone_origin(path: Path) -> str:
    """The zone a fixture file describes: its first `$ORIGIN` directive."""
    for line in path.read_text().splitlines():
        if line.upper().startswith("$ORIGIN"):
            return line.split()[1]
    raise ValueError(f"{path}: zone files in {ZONES_DIR} must start with an $ORIGIN line")


def fixture_zones() -> dict[str, Path]:
    return {zone_origin(path): path for path in sorted(ZONES_DIR.glob("*.zone"))}


def render_nsd_conf(workdir: Path, port: int) -> str:
    zones = [(origin, str(path)) for origin, path in fixture_zones().items()]
    zones += [(f"{name}.", str(workdir / f"{name}.absent")) for name in SERVFAIL_ZONES]
    lines = [
        "server:",
        f"  ip-address: {HOST}@{port}",
        f"  port: {port}",
        '  username: ""',
        '  chroot: ""',
        '  database: ""',
        f'  zonelistfile: "{workdir}/zone.list"',
        f'  xfrdfile: "{workdir}/xfrd.state"',
        f'  xfrdir: "{workdir}"',
        f'  pidfile: "{workdir}/nsd.pid"',
        f'  logfile: "{workdir}/nsd.log"',
        "  verbosity: 1",
        "  server-count: 1",
        "  do-ip6: no",
        "  hide-version: yes",
        "  rrl-ratelimit: 0",
        "remote-control:",
        "  control-enable: no",
    ]
    for origin, zonefile in zones:
        lines += ["zone:", f'  name: "{origin}"', f'  zonefile: "{zonefile}"']
    return "\n".join(lines) + "\n"


def free_port() -> int:
    """A loopback port free for both UDP and TCP (NSD listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port: int = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free loopback port for the test DNS server")


def _soa_rcode(origin: str, port: int, timeout: float) -> int | None:
    try:
        response = dns.query.udp(dns.message.make_query(origin, "SOA"), HOST, port=port, timeout=timeout)
    except (dns.exception.Timeout, OSError):
        return None
    return response.rcode()


def _wait_until_serving(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while _soa_rcode(".", port, 0.05) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            log = log_path.read_text() if log_path.exists() else ""
            raise RuntimeError(f"nsd did not start on {HOST}:{port} (exit {proc.poll()}):\n{log}")
        time.sleep(0.01)
    # A zone file with an error is silently served as SERVFAIL: fail loudly instead.
    broken = [o for o in fixture_zones() if _soa_rcode(o, port, 1.0) != dns.rcode.NOERROR]
    if broken:
        raise RuntimeError(f"nsd did not load zones {broken}; see {log_path}:\n{log_path.read_text()}")


@contextlib.contextmanager
def run_nsd(workdir: Path) -> Iterator[DnsServer]:
    """Run NSD in the foreground for the duration of the block."""
    nsd = shutil.which("nsd") or shutil.which("nsd", path="/usr/sbin:/usr/local/sbin")
    if nsd is None:
        raise RuntimeError(INSTALL_HINT)
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = workdir / "nsd.conf"
    conf.write_text(render_nsd_conf(workdir, port))
    log_path = workdir / "nsd.log"
    proc = subprocess.Popen([nsd, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        _wait_until_serving(proc, port, log_path)
        yield DnsServer(HOST, port, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class UnresponsiveDnsServer:
    """A bound UDP socket nobody reads: queries sent to it time out, as with a dead or firewalled server."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((HOST, 0))
        self.port: int = self._sock.getsockname()[1]
        self.nameserver = f"{HOST}:{self.port}"

    def close(self) -> None:
        self._sock.close()


@dataclass
class CountingDnsProxy:
    """Forwards UDP queries to `upstream` one at a time and counts them by (name, type)."""

    upstream: DnsServer
    queries: Counter[tuple[str, str]] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind((HOST, 0))
        self.port: int = self._sock.getsockname()[1]
        self.nameserver = f"{HOST}:{self.port}"
        self._thread = threading.Thread(target=self._serve, name="dns-proxy", daemon=True)
        self._thread.start()

    def count(self, name: str, rdtype: str) -> int:
        with self._lock:
            return self.queries[(name.lower().rstrip("."), rdtype.upper())]

    def total(self) -> int:
        with self._lock:
            return sum(self.queries.values())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _serve(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as upstream:
            upstream.settimeout(1.0)
            while not self._stop.is_set():
                readable, _, _ = select.select([self._sock], [], [], 0.05)
                if not readable:
                    continue
                wire, client = self._sock.recvfrom(65535)
                self._record(wire)
                upstream.sendto(wire, (self.upstream.host, self.upstream.port))
                try:
                    answer, _ = upstream.recvfrom(65535)
                except TimeoutError:
                    continue  # the client times out too, as it would with a lossy network
                self._sock.sendto(answer, client)

    def _record(self, wire: bytes) -> None:
        question = dns.message.from_wire(wire).question[0]
        key = (question.name.to_text(omit_final_dot=True).lower(), dns.rdatatype.to_text(question.rdtype))
        with self._lock:
            self.queries[key] += 1


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DnsServer]:
    """NSD serving fixtures/dns/zones on 127.0.0.1:<port> for the whole test session."""
    try:
        with run_nsd(tmp_path_factory.mktemp("nsd")) as server:
            yield server
    except RuntimeError as exc:
        if INSTALL_HINT in str(exc):
            pytest.fail(INSTALL_HINT, pytrace=False)
        raise


@pytest.fixture
def unresponsive_dns() -> Iterator[UnresponsiveDnsServer]:
    server = UnresponsiveDnsServer()
    yield server
    server.close()


@pytest.fixture
def counting_dns_proxy(dns_server: DnsServer) -> Iterator[CountingDnsProxy]:
    proxy = CountingDnsProxy(dns_server)
    yield proxy
    proxy.close()
