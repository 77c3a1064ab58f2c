"""The filter stages through the real listener, against real NSD, clamd and Rspamd on loopback.

Each filter has its own tests in tests/filters; these show the whole path: the SMTP reply a client gets, and
the verdicts, auth, spam and virus results a ticket carries.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inbound.ticket.payload import validate_ticket
from postroom.app.cli import main
from postroom.helpdesk.receiver import TicketReceiver
from tests.servers.clamd import ClamdServer
from tests.servers.dns import DnsServer
from tests.servers.rspamd import RspamdServer
from tests.support import tomlwrite
from tests.support.harness import (
    DOMAIN,
    config_mapping,
    make_config,
    message,
    running,
    send,
    smtp_port,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

EICAR = r"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
CLEAN_HELO = "mail.hosts.test"
CLEAN_SENDER = "ada@pass.spf.test"


def _filters(
    dns: DnsServer, clamd: ClamdServer, rspamd: RspamdServer, **overrides: dict[str, Any]
) -> dict[str, Any]:
    sections: dict[str, dict[str, Any]] = {
        "dnsbl": {"enabled": True, "zones": ["dnsbl.test"]},
        "fqdn": {"enabled": True},
        "spf": {"enabled": True},
        "clamav": {"enabled": True, "address": clamd.tcp_address},
        "rspamd": {"enabled": True, "url": rspamd.url},
        "dkim": {"enabled": True},
    }
    for name, values in overrides.items():
        sections.setdefault(name, {}).update(values)
    return sections


def _send_as_clean_client(config: Any, body: str = "Please help.\n", *, source_ip: str | None = None) -> Any:
    """One message from a client that passes every check (HELO, SPF, reverse DNS) but what its body trips."""
    return send(
        smtp_port(config),
        [f"support@acme.{DOMAIN}"],
        message(body=body, sender=CLEAN_SENDER),
        sender=CLEAN_SENDER,
        helo=CLEAN_HELO,
        source_ip=source_ip,
    )


def _config(tmp_path: Path, url: str, dns: DnsServer, filters: dict[str, Any]) -> Any:
    return make_config(tmp_path / "spool", url, dns={"nameservers": [dns.nameserver]}, filters=filters)


ConfigFactory = Callable[..., Any]


@pytest.fixture
def pipeline_config(
    tmp_path: Path,
    helpdesk: TicketReceiver,
    dns_server: DnsServer,
    clamd_server: ClamdServer,
    rspamd_server: RspamdServer,
) -> ConfigFactory:
    """A config with every filter on against the real daemons; keyword arguments override filter sections."""

    def make(**overrides: dict[str, Any]) -> Any:
        filters = _filters(dns_server, clamd_server, rspamd_server, **overrides)
        return _config(tmp_path, helpdesk.url, dns_server, filters)

    return make


async def test_clean_mail_passes_every_filter_and_the_ticket_shows_each_verdict(
    pipeline_config: ConfigFactory, helpdesk: TicketReceiver
) -> None:
    config = pipeline_config()
    async with running(config):
        result = await asyncio.to_thread(_send_as_clean_client, config)
        assert result.code == 250, result
        assert await helpdesk.wait_for_async(1, timeout=30)
    ticket = helpdesk.accepted[0].payload
    assert ticket is not None
    validate_ticket(ticket)
    ran = {(v["stage"], v["filter"]) for v in ticket["verdicts"]}
    assert {
        ("connect", "dnsbl"),
        ("helo", "fqdn"),
        ("mail", "fqdn"),
        ("mail", "spf"),
        ("data", "clamav"),
        ("data", "rspamd"),
        ("data", "auth"),
    } <= ran
    assert all(v["action"] == "accept" for v in ticket["verdicts"])
    assert ticket["auth"]["spf"]["result"] == "pass"
    assert ticket["virus"] == {"found": False, "name": None}
    assert isinstance(ticket["spam"]["score"], int | float) and ticket["spam"]["action"] == "no action"
    header_names = [name.lower() for name, _ in ticket["headers"]]
    assert "authentication-results" in header_names and "received-spf" in header_names


async def test_listed_client_is_refused_at_connect_naming_the_zone(
    pipeline_config: ConfigFactory, helpdesk: TicketReceiver
) -> None:
    config = pipeline_config()
    async with running(config):
        listed = await asyncio.to_thread(
            send, smtp_port(config), [f"a@acme.{DOMAIN}"], source_ip="127.0.0.66"
        )
        clean = await asyncio.to_thread(_send_as_clean_client, config)
    assert listed.code == 554 and listed.text.startswith("5.7.1") and "dnsbl.test" in listed.text
    assert clean.code == 250


@pytest.mark.parametrize(
    ("body", "code", "needle"),
    [(EICAR, 554, "UNOFFICIAL"), (GTUBE, 554, "spam")],
    ids=["eicar", "gtube"],
)
async def test_virus_and_spam_are_refused_at_data(
    pipeline_config: ConfigFactory, body: str, code: int, needle: str
) -> None:
    config = pipeline_config()
    async with running(config) as app:
        result = await asyncio.to_thread(_send_as_clean_client, config, body + "\r\n")
        assert app.spool.ids("incoming") == []
    assert result.code == code and result.text.startswith("5.7.1") and needle in result.text


async def test_observe_mode_changes_no_reply_but_records_what_it_would_have_done(
    pipeline_config: ConfigFactory, helpdesk: TicketReceiver
) -> None:
    config = pipeline_config(clamav={"mode": "observe"})
    async with running(config):
        result = await asyncio.to_thread(_send_as_clean_client, config, EICAR + "\r\n")
        assert result.code == 250
        assert await helpdesk.wait_for_async(1, timeout=30)
    ticket = helpdesk.accepted[0].payload
    assert ticket is not None
    (clamav,) = [v for v in ticket["verdicts"] if v["filter"] == "clamav"]
    assert clamav["result"] == "fail" and clamav["action"] == "observe:reject" and clamav["mode"] == "observe"
    assert ticket["virus"]["found"] is True and "EICAR" in ticket["virus"]["name"]


async def test_scanner_down_is_a_temporary_failure_or_a_flagged_fail_open(
    tmp_path: Path,
    helpdesk: TicketReceiver,
    dns_server: DnsServer,
    clamd_killable: ClamdServer,
    rspamd_server: RspamdServer,
) -> None:
    clamd_killable.stop()
    enforce = _config(
        tmp_path / "a", helpdesk.url, dns_server, _filters(dns_server, clamd_killable, rspamd_server)
    )
    async with running(enforce) as app:
        refused = await asyncio.to_thread(_send_as_clean_client, enforce)
        assert app.spool.ids("incoming") == []
    assert refused.code == 451 and refused.text.startswith("4.")
    fail_open = _filters(dns_server, clamd_killable, rspamd_server, clamav={"fail_open": True})
    config = _config(tmp_path / "b", helpdesk.url, dns_server, fail_open)
    async with running(config):
        accepted = await asyncio.to_thread(_send_as_clean_client, config)
        assert accepted.code == 250
        assert await helpdesk.wait_for_async(1, timeout=30)
    ticket = helpdesk.accepted[0].payload
    assert ticket is not None
    (clamav,) = [v for v in ticket["verdicts"] if v["filter"] == "clamav"]
    assert clamav["result"] == "temperror" and clamav["failed_open"] is True


def test_check_command_runs_the_configured_filters_on_a_file(
    tmp_path: Path,
    dns_server: DnsServer,
    clamd_server: ClamdServer,
    rspamd_server: RspamdServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    mapping = config_mapping(
        tmp_path / "spool",
        "http://127.0.0.1:9/t",
        dns={"nameservers": [dns_server.nameserver]},
        filters=_filters(dns_server, clamd_server, rspamd_server),
    )
    config_path = tomlwrite.write(tmp_path / "postroom.toml", mapping)
    eml = tmp_path / "eicar.eml"
    eml.write_bytes(message(body=EICAR + "\r\n", sender=CLEAN_SENDER))
    status = main(
        ["check", "-c", str(config_path), str(eml), "--mail-from", CLEAN_SENDER, "--helo", CLEAN_HELO]
    )
    out, err = capsys.readouterr()
    assert status == 0
    ticket = json.loads(out)
    validate_ticket(ticket)
    assert ticket["virus"]["found"] is True and ticket["auth"]["spf"]["result"] == "pass"
    assert {v["filter"] for v in ticket["verdicts"]} >= {"dnsbl", "fqdn", "spf", "clamav"}
    assert "would be refused: 554 5.7.1" in err and "EICAR" in err
