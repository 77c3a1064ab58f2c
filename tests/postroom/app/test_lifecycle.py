"""Signals to a real `postroom serve`: SIGTERM drains politely, SIGHUP reloads routing without a restart."""

from __future__ import annotations

import signal
import smtplib
import socket
import time
from pathlib import Path

import pytest

from postroom.helpdesk.receiver import TicketReceiver
from tests.support import tomlwrite
from tests.support.harness import DOMAIN, SECRET, config_mapping, free_port, message, serve_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def _greeting(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        return sock.makefile("rb").readline().decode().rstrip()


def test_sigterm_refuses_new_sessions_and_lets_a_transaction_in_flight_finish(tmp_path: Path) -> None:
    receiver = TicketReceiver(SECRET)
    port = free_port()
    mapping = config_mapping(
        tmp_path / "spool", "http://127.0.0.1:9/t", port=port, delivery={"shutdown_grace": 10.0}
    )
    config_path = tomlwrite.write(tmp_path / "postroom.toml", mapping)
    with receiver.run_in_thread(), serve_process(config_path, port, tmp_path / "serve.log") as server:
        busy = smtplib.SMTP("127.0.0.1", port, timeout=10)
        busy.ehlo("client.example.org")
        busy.mail("ada@example.org")
        busy.rcpt(f"support@acme.{DOMAIN}")
        idle = smtplib.SMTP("127.0.0.1", port, timeout=10)
        idle.ehlo("idle.example.org")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert _greeting(port).startswith("421 4.3.2")
        # The idle session was told 421 and closed; smtplib reads that line as the NOOP's answer.
        assert idle.noop()[0] == 421
        code, reply = busy.data(message("in flight"))
        assert code == 250 and b"queued as" in reply
        busy.quit()
        assert server.proc.wait(30) == 0
    queued = list((tmp_path / "spool").glob("*/*.msg"))
    assert len(queued) == 1  # the 250'd message is on disk for the next start


def test_sighup_reloads_the_tenant_list(tmp_path: Path) -> None:
    tenants = tmp_path / "tenants"
    tenants.write_text("acme\n")
    port = free_port()
    mapping = config_mapping(
        tmp_path / "spool", "http://127.0.0.1:9/t", port=port, routing={"tenant_file": str(tenants)}
    )
    config_path = tomlwrite.write(tmp_path / "postroom.toml", mapping)
    with serve_process(config_path, port, tmp_path / "serve.log") as server:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.example.org")
            client.mail("ada@example.org")
            assert client.rcpt(f"a@globex.{DOMAIN}")[0] == 550
        tenants.write_text("acme\nglobex\n")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        code = 0
        while time.monotonic() < deadline:
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo("client.example.org")
                client.mail("ada@example.org")
                code = client.rcpt(f"a@globex.{DOMAIN}")[0]
            if code == 250:
                break
            time.sleep(0.1)
        assert code == 250
