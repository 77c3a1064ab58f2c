"""The relay inside `postroom serve`, end to end.

The helpdesk submits over STARTTLS+AUTH; the runner delivers to the recipient's MX (found in the test DNS)
with a VERP return path; the bounce comes back to Postroom's own MX; the recipient lands on the suppression
list, no ticket is made, and the next submission to it is refused.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
from pathlib import Path

import pytest

from outbound.dsn import FailedRecipient, build_dsn
from postroom.app.config import Config, config_from_mapping
from postroom.app.serve import Postroom
from postroom.core.spool import QUEUE_STATES
from postroom.helpdesk.receiver import TicketReceiver
from tests.outbound.delivery_fixtures import MX_MULTI_1, VERP_SECRET, MxFarm, wait_for
from tests.outbound.submission_fixtures import DKIM_KEY, HELPDESK_PASSWORD, SIGNING_DOMAIN, TlsFiles
from tests.servers.dns import DnsServer
from tests.support.harness import SECRET, free_port, running, smtp_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

BOUNCE_DOMAIN = "bounces.helpdesk.test"
RECIPIENT = "customer@multi.dest.test"
SENDER = f"notify@{SIGNING_DOMAIN}"


def _config(
    tmp_path: Path, dns: DnsServer, farm: MxFarm, tls: TlsFiles, hashes: dict[str, str], url: str
) -> Config:
    return config_from_mapping(
        {
            "smtp": {"listen": f"127.0.0.1:{free_port()}", "hostname": "mx.helpdesk.test"},
            "routing": {"domains": ["helpdesk.test"]},
            "spool": {"path": str(tmp_path / "spool"), "min_free_bytes": 0},
            "webhook": {"url": url, "secret": SECRET},
            "delivery": {"normalize_workers": 0},
            "dns": {"nameservers": [dns.nameserver], "timeout": 2.0},
            "submission": {
                "enabled": True,
                "listen": f"127.0.0.1:{free_port()}",
                "hostname": "submit.helpdesk.test",
                "tls_cert": str(tls.cert),
                "tls_key": str(tls.key),
                "users": [
                    {
                        "name": "helpdesk",
                        "password_hash": hashes["helpdesk"],
                        "sender_domains": [SIGNING_DOMAIN],
                    }
                ],
            },
            "outbound": {
                "enabled": True,
                "smtp_port": farm.port,
                "bounce_domain": BOUNCE_DOMAIN,
                "verp_secret": VERP_SECRET,
                "helo_name": "relay.helpdesk.test",
                "retry_initial": 0.2,
                "retry_max_interval": 0.5,
            },
            "dkim": {"selector": "postroom", "keys": {SIGNING_DOMAIN: str(DKIM_KEY)}},
        }
    )


@pytest.fixture
def relay_config(
    tmp_path: Path,
    dns_server: DnsServer,
    mx_farm: MxFarm,
    tls_files: TlsFiles,
    user_hashes: dict[str, str],
    helpdesk: TicketReceiver,
) -> Config:
    return _config(tmp_path, dns_server, mx_farm, tls_files, user_hashes, helpdesk.url)


def _outbound_deliveries(app: Postroom, outcome: str) -> float:
    samples = app.metrics.registry.collect()
    return sum(
        s.value
        for family in samples
        for s in family.samples
        if s.name == "postroom_outbound_deliveries_total" and s.labels.get("outcome") == outcome
    )


def _submit(port: int, rcpt: str) -> tuple[int, bytes]:
    """Authenticate over STARTTLS and submit one notification; returns the RCPT reply."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    raw = (
        f"From: Helpdesk <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: Your ticket #4711 was answered\r\n\r\n"
        "An agent replied.\r\n"
    ).encode()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.starttls(context=context)
        client.login("helpdesk", HELPDESK_PASSWORD)
        client.mail(SENDER)
        code, reply = client.rcpt(rcpt)
        if code == 250:
            client.data(raw)
        return code, reply


def _bounce_to_mx(port: int, verp: str, raw: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mx.multi.dest.test")
        client.mail("<>")
        client.rcpt(verp)
        return client.data(raw)


def _rcpt_reply(port: int, rcpt: str) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("mx.example.org")
        client.mail("<>")
        return client.rcpt(rcpt)


async def test_notification_delivered_bounce_suppresses_and_makes_no_ticket(
    relay_config: Config, mx_farm: MxFarm, helpdesk: TicketReceiver
) -> None:
    config = relay_config
    async with running(config) as app:
        submission = app.outbound.submission
        assert submission is not None
        code, _ = await asyncio.to_thread(_submit, submission.port, RECIPIENT)
        assert code == 250
        await wait_for(lambda: len(mx_farm.at(MX_MULTI_1)) == 1)
        # The settled delivery is counted (the Grafana panel for outbound deliveries reads this counter).
        await wait_for(lambda: _outbound_deliveries(app, "delivered") == 1)
        delivered = mx_farm.at(MX_MULTI_1)[0]
        verp = delivered.mail_from
        assert verp.startswith("bounce+") and verp.endswith(f"@{BOUNCE_DOMAIN}")
        assert b"DKIM-Signature:" in delivered.data and b"Auto-Submitted: auto-generated" in delivered.data

        dsn = build_dsn(
            reporting_mta="mx.multi.dest.test",
            recipient=verp,
            original_queue_id="REMOTE1",
            original_raw=delivered.data,
            arrival=time.time(),
            failures=[FailedRecipient(RECIPIENT, "5.1.1", "550 5.1.1 user unknown", "mx.multi.dest.test")],
            now=time.time(),
        )
        code, reply = await asyncio.to_thread(_bounce_to_mx, smtp_port(config), verp, dsn.raw)
        assert code == 250 and b"bounce processed" in reply, reply  # processed in DATA, never queued
        entry = await app.outbound.suppression.lookup(RECIPIENT)
        assert entry is not None and entry.source == "bounce"

        code, reply = await asyncio.to_thread(_submit, submission.port, RECIPIENT)
        assert code == 550 and reply.startswith(b"5.1.1")
        assert helpdesk.tickets == []  # the bounce never became a ticket
        assert all(app.spool.ids(state) == [] for state in QUEUE_STATES)


async def test_forged_bounce_address_is_not_accepted(relay_config: Config) -> None:
    async with running(relay_config) as app:
        port = smtp_port(relay_config)
        forged = f"bounce+0000000000000000-X-victim=example.org@{BOUNCE_DOMAIN}"
        code, reply = await asyncio.to_thread(_rcpt_reply, port, forged)
        assert code == 550 and reply.startswith(b"5.1.1")
        assert await app.outbound.suppression.entries() == []
        assert app.spool.ids("incoming") == []
