"""Helpers for the submission tests: a self-signed TLS certificate, a config with two users, the listener
running on its own event loop thread (so tests drive it with the blocking `smtplib`, as a web app would),
and an adjustable clock."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import smtplib
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.resolver
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from outbound.passwords import hash_password
from outbound.submission import SubmissionServer
from outbound.suppression import SuppressionList
from postroom.app.config import Config, config_from_mapping
from postroom.core.spool import Spool
from tests.servers.daemon import free_port
from tests.servers.dns import DnsServer

REPO = Path(__file__).resolve().parents[2]
DKIM_KEY = REPO / "fixtures" / "dkim" / "mail-out.test.private.pem"
SIGNING_DOMAIN = "mail-out.test"
HELPDESK_PASSWORD = "correct horse battery staple"
OTHER_PASSWORD = "another-secret"
# A low scrypt cost keeps the suite fast; the hash format carries it, so verification uses the same.
TEST_COST = 2**12


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this certificate (and checks its name)."""
        return ssl.create_default_context(cafile=str(self.cert))


class FakeClock:
    def __init__(self, start: float = 1_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def write_self_signed(directory: Path) -> TlsFiles:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "submit.mail-out.test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("submit.mail-out.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(directory / "cert.pem", directory / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return write_self_signed(tmp_path_factory.mktemp("submission-tls"))


@pytest.fixture(scope="session")
def user_hashes() -> dict[str, str]:
    return {
        "helpdesk": hash_password(HELPDESK_PASSWORD, n=TEST_COST),
        "other": hash_password(OTHER_PASSWORD, n=TEST_COST),
    }


def make_config(tmp_path: Path, tls: TlsFiles, hashes: dict[str, str], **submission: Any) -> Config:
    """Submission on 127.0.0.1:<a free port>: `helpdesk` may send as mail-out.test and its subdomain
    notify.mail-out.test, `other` only as other.test. DKIM keys: mail-out.test only."""
    section: dict[str, Any] = {
        "enabled": True,
        "listen": f"127.0.0.1:{free_port()}",
        "hostname": "submit.mail-out.test",
        "tls_cert": str(tls.cert),
        "tls_key": str(tls.key),
        "users": [
            {
                "name": "helpdesk",
                "password_hash": hashes["helpdesk"],
                "sender_domains": ["mail-out.test", "notify.mail-out.test"],
            },
            {"name": "other", "password_hash": hashes["other"], "sender_domains": ["other.test"]},
        ],
    }
    section.update(submission)
    return config_from_mapping(
        {
            "spool": {"path": str(tmp_path / "spool")},
            "submission": section,
            "dkim": {"selector": "postroom", "keys": {SIGNING_DOMAIN: str(DKIM_KEY)}},
        }
    )


@pytest.fixture
def submission_config(tmp_path: Path, tls_files: TlsFiles, user_hashes: dict[str, str]) -> Config:
    return make_config(tmp_path, tls_files, user_hashes)


@contextmanager
def running_submission(
    cfg: Config,
    *,
    spool: Spool,
    suppression: SuppressionList,
    monotonic: FakeClock | None = None,
) -> Iterator[SubmissionServer]:
    """The listener on an event loop in a background thread, stopped (bounded) on exit."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="submission-loop", daemon=True)
    thread.start()
    server = SubmissionServer(
        cfg, spool=spool, suppression=suppression, monotonic=monotonic or time.monotonic
    )
    try:
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=10)
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(timeout=20)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def connect(
    server: SubmissionServer, tls: TlsFiles, *, source_ip: str | None = None, starttls: bool = True
) -> smtplib.SMTP:
    """An SMTP client session, after EHLO and (by default) STARTTLS with certificate verification."""
    client = smtplib.SMTP(
        "127.0.0.1",
        server.port,
        local_hostname="app.mail-out.test",
        timeout=10,
        source_address=(source_ip, 0) if source_ip else None,
    )
    client.ehlo()
    if starttls:
        client.starttls(context=tls.client_context())
        client.ehlo()
    return client


def auth_plain(client: smtplib.SMTP, user: str, password: str) -> tuple[int, bytes]:
    """One AUTH PLAIN attempt (smtplib's login() would retry with LOGIN, counting twice)."""
    client.user, client.password = user, password
    return client.auth("PLAIN", client.auth_plain)


def dkim_dnsfunc(server: DnsServer) -> Callable[..., bytes | None]:
    """A dkimpy `dnsfunc` that asks the test DNS server (NSD), as a receiving MX would ask the world."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [server.host]
    resolver.port = server.port

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        answer = resolver.resolve(name.decode(), "TXT", lifetime=timeout)
        return b"".join(answer[0].strings)

    return lookup
