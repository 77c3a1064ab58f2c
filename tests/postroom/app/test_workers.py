"""`[smtp] workers = 2`: a supervisor, two workers sharing the port (SO_REUSEPORT) and one spool."""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from postroom.helpdesk.receiver import Response, TicketReceiver
from tests.postroom.app.test_end_to_end import _burst
from tests.support import tomlwrite
from tests.support.harness import SECRET, config_mapping, free_port, serve_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.fixture
def receiver() -> Iterator[TicketReceiver]:
    helpdesk = TicketReceiver(SECRET)
    with helpdesk.run_in_thread():
        yield helpdesk


def _config(tmp_path: Path, url: str, port: int, ops_port: int) -> Path:
    data = config_mapping(
        tmp_path / "spool",
        url,
        port=port,
        smtp={"workers": 2},
        metrics={"listen": f"127.0.0.1:{ops_port}"},
    )
    return tomlwrite.write(tmp_path / "postroom.toml", data)


ESTABLISHED, LISTEN = "01", "0A"  # TCP states as /proc/net/tcp writes them


def _workers(supervisor_pid: int, port: int, count: int = 2, timeout: float = 20.0) -> list[int]:
    """The supervisor's worker processes, once `count` of them listen on `port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children").read_text().split()
        pids = [int(pid) for pid in children]
        if len(pids) == count and all(_sockets_by_pid(pids, port, LISTEN).values()):
            return pids
        time.sleep(0.05)
    raise AssertionError(f"supervisor did not run {count} listening workers")


def _sockets_by_pid(pids: list[int], port: int, state: str) -> dict[int, int]:
    """How many sockets on local `port` in `state` each process holds (fd inodes ↔ /proc/net/tcp)."""
    wanted = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
            wanted.add(fields[9])
    counts = {}
    for pid in pids:
        inodes = set()
        with contextlib.suppress(FileNotFoundError):  # a process exiting meanwhile holds none
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
        counts[pid] = len(inodes & wanted)
    return counts


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_two_workers_share_the_port_and_deliver_every_message_once(
    tmp_path: Path, receiver: TicketReceiver
) -> None:
    port, ops_port = free_port(), free_port()
    config_path = _config(tmp_path, receiver.url, port, ops_port)
    with serve_process(config_path, port, tmp_path / "serve.log") as server:
        assert server.proc is not None
        workers = _workers(server.proc.pid, port)
        clients = [smtplib.SMTP("127.0.0.1", port, timeout=30) for _ in range(16)]
        for client in clients:
            client.ehlo("client.example.org")
        spread = _sockets_by_pid(workers, port, ESTABLISHED)
        assert sum(spread.values()) == 16
        assert all(count > 0 for count in spread.values()), f"the kernel gave one worker everything: {spread}"
        for client in clients:
            client.quit()
        acked, errors, threads = _burst(port, sessions=8, per_session=25, stop=threading.Event())
        for thread in threads:
            thread.join(60)
        assert errors == [] and len(acked) == 200
        assert receiver.wait_for(200, timeout=60)
        status, body = _get(ops_port, "/readyz")
        ready = orjson.loads(body)
        assert status == 200, ready
        assert {"name": "workers", "ok": True, "detail": "2 running"} in ready["checks"]
        _, metrics = _get(ops_port, "/metrics")
    keys = [t.idempotency_key for t in receiver.accepted]
    assert sorted(keys) == sorted(acked)  # each exactly once: no message delivered by both workers
    text = metrics.decode()
    assert _metric_sum(text, "postroom_messages_accepted_total") == 200  # summed over both workers
    assert _metric_sum(text, "postroom_webhook_attempt_duration_seconds_count", outcome="delivered") == 200
    assert _metric_sum(text, "postroom_spool_messages", queue="inbound", state="incoming") == 0


def test_a_killed_worker_is_restarted_and_loses_nothing(tmp_path: Path) -> None:
    # A slow helpdesk keeps deliveries in flight, so the killed worker dies holding claims in active/.
    receiver = TicketReceiver(SECRET, respond_with=lambda _ticket: Response(delay=0.2))
    port, ops_port = free_port(), free_port()
    with receiver.run_in_thread():
        config_path = _config(tmp_path, receiver.url, port, ops_port)
        with serve_process(config_path, port, tmp_path / "serve.log") as server:
            assert server.proc is not None
            victim, survivor = _workers(server.proc.pid, port)
            stop = threading.Event()
            acked, _errors, threads = _burst(port, sessions=6, per_session=40, stop=stop)
            deadline = time.monotonic() + 30
            while len(acked) < 60 and time.monotonic() < deadline:
                time.sleep(0.01)
            os.kill(victim, signal.SIGKILL)
            for thread in threads:
                thread.join(60)
            acked_ids = set(acked)
            assert len(acked_ids) >= 60
            restarted = [pid for pid in _workers(server.proc.pid, port) if pid != survivor]
            assert restarted and restarted[0] != victim
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if acked_ids <= {t.idempotency_key for t in receiver.accepted}:
                    break
                time.sleep(0.1)
            assert server.terminate() == 0
        delivered = {t.idempotency_key for t in receiver.accepted}
    missing = acked_ids - delivered
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:3]}"
    assert "worker exited, starting it again" in (tmp_path / "serve.log").read_text()
    assert not any((tmp_path / "spool" / "active").iterdir())


def test_sigterm_stops_the_supervisor_and_every_worker(tmp_path: Path, receiver: TicketReceiver) -> None:
    port, ops_port = free_port(), free_port()
    config_path = _config(tmp_path, receiver.url, port, ops_port)
    with serve_process(config_path, port, tmp_path / "serve.log") as server:
        assert server.proc is not None
        workers = _workers(server.proc.pid, port)
        assert server.terminate() == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists()
