"""`postroom serve` as a real process: bulk traffic from real SMTP clients, and kill -9 mid-burst."""

from __future__ import annotations

import smtplib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inbound.ticket.payload import validate_ticket
from postroom.helpdesk.receiver import TicketReceiver
from tests.support import tomlwrite
from tests.support.harness import DOMAIN, SECRET, config_mapping, free_port, message, serve_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture
def receiver() -> Iterator[TicketReceiver]:
    helpdesk = TicketReceiver(SECRET)
    with helpdesk.run_in_thread():
        yield helpdesk


def _write_config(tmp_path: Path, url: str, port: int) -> Path:
    data = config_mapping(tmp_path / "spool", url, port=port, delivery={"normalize_workers": 1})
    return tomlwrite.write(tmp_path / "postroom.toml", data)


def _sender(
    port: int, session: int, count: int, acked: list[str], errors: list[str], stop: threading.Event
) -> None:
    """One SMTP session sending up to `count` messages; records the queue id of every 250."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo("client.example.org")
            for n in range(count):
                if stop.is_set():
                    return
                rcpt = f"support+{session}x{n}@tenant{session % 3}.{DOMAIN}"
                client.mail("ada@example.org")
                client.rcpt(rcpt)
                code, reply = client.data(message(f"s{session} n{n}"))
                if code != 250:
                    errors.append(f"{code} {reply.decode()}")
                    continue
                acked.append(reply.decode().rsplit(" ", 1)[1])
    except (smtplib.SMTPException, OSError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")


def _burst(
    port: int, sessions: int, per_session: int, stop: threading.Event
) -> tuple[list[str], list[str], list[threading.Thread]]:
    acked: list[str] = []
    errors: list[str] = []
    threads = [
        threading.Thread(target=_sender, args=(port, s, per_session, acked, errors, stop))
        for s in range(sessions)
    ]
    for thread in threads:
        thread.start()
    return acked, errors, threads


def test_thousand_messages_over_ten_sessions_arrive_as_valid_signed_tickets(
    tmp_path: Path, receiver: TicketReceiver
) -> None:
    port = free_port()
    config_path = _write_config(tmp_path, receiver.url, port)
    with serve_process(config_path, port, tmp_path / "serve.log"):
        acked, errors, threads = _burst(port, sessions=10, per_session=100, stop=threading.Event())
        for thread in threads:
            thread.join(240)
        assert errors == []
        assert len(acked) == 1000
        assert receiver.wait_for(1000, timeout=180), f"only {len(receiver.accepted)} tickets arrived"
    tickets = receiver.accepted
    assert len(tickets) == 1000
    assert {t.idempotency_key for t in tickets} == set(acked)
    assert all(t.signature_ok for t in tickets)
    for ticket in tickets:
        assert ticket.payload is not None
        validate_ticket(ticket.payload)
    subjects = {t.payload["subject"] for t in tickets if t.payload}
    assert len(subjects) == 1000


def test_kill_9_mid_burst_loses_no_acknowledged_message(tmp_path: Path, receiver: TicketReceiver) -> None:
    port = free_port()
    config_path = _write_config(tmp_path, receiver.url, port)
    log_path = tmp_path / "serve.log"
    with serve_process(config_path, port, log_path) as server:
        stop = threading.Event()
        acked, _errors, threads = _burst(port, sessions=6, per_session=400, stop=stop)
        deadline = time.monotonic() + 30
        while len(acked) < 300 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill9()  # mid-burst: sessions in DATA die without a reply, nothing they sent was acked
        stop.set()
        for thread in threads:
            thread.join(30)
        acked_before_crash = set(acked)
        assert len(acked_before_crash) >= 300
        server.start()
        assert receiver.wait_for(len(acked_before_crash), timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            delivered = {t.idempotency_key for t in receiver.accepted}
            if acked_before_crash <= delivered:
                break
            time.sleep(0.1)
    delivered = {t.idempotency_key for t in receiver.accepted}
    missing = acked_before_crash - delivered
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:3]}"
    # Duplicates are possible for deliveries interrupted by the kill, and only ever under the same key.
    keys = [t.idempotency_key for t in receiver.accepted]
    duplicates = len(keys) - len(set(keys))
    assert duplicates <= 64
