"""A Postroom cluster on loopback: real HAProxy → two `postroom serve` nodes → one TicketReceiver, with one
redis-server shared by the nodes. The test module builds it once; this file knows how to start, drive and
read it (SMTP through HAProxy, /metrics, HAProxy's server states, the `postroom` CLI)."""

from __future__ import annotations

import contextlib
import csv
import io
import smtplib
import string
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from prometheus_client.parser import text_string_to_metric_families

from postroom.core.spool import Spool
from postroom.helpdesk.receiver import ReceivedTicket, Response, TicketReceiver
from tests.servers.daemon import FIXTURES, DaemonProcess, find_binary, free_port, wait_until
from tests.servers.redis import RedisServer
from tests.support import tomlwrite
from tests.support.harness import DOMAIN, REPO, SECRET, ServeProcess, config_mapping, message

HAPROXY_TEMPLATE = FIXTURES / "haproxy" / "haproxy.cfg.template"
# Throttle limits other than the per-IP message rate are off, so only the limit under test refuses.
THROTTLE_OFF = {
    "ip_concurrency": 0,
    "ip_connections_per_minute": 0,
    "ip_recipients_per_minute": 0,
    "sender_messages_per_minute": 0,
    "tenant_messages_per_minute": 0,
    "auto_block_rejects": 0,
}

ALL_UP = {"mx1": "UP", "mx2": "UP"}
# [webhook] retry_max_interval: retries stay quick, yet a Retry-After holds a message in deferred/ this long.
RETRY_CAP = 10.0
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Node:
    name: str  # also its SMTP hostname's first label: "mx1" greets as mx1.helpdesk.test
    smtp_port: int
    ops_port: int
    config_path: Path
    spool_dir: Path
    log_path: Path
    process: ServeProcess

    @property
    def spool(self) -> Spool:
        return Spool(self.spool_dir)

    def scrape(self) -> Samples:
        """GET /metrics: every sample as {(name, labels): value}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ops_port}/metrics", timeout=5) as answer:
            text = answer.read().decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def log_events(self) -> list[dict[str, Any]]:
        """The node's JSON log lines (stderr of `postroom serve`), parsed; anything else is skipped."""
        events = []
        for line in self.log_path.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                record = orjson.loads(line)
                if isinstance(record, dict):
                    events.append(record)
        return events

    def cli(self, *args: str) -> str:
        """Run `postroom <args> --config <this node's config>` and return its standard output."""
        done = subprocess.run(
            [sys.executable, "-m", "postroom.app.cli", *args, "--config", str(self.config_path)],
            capture_output=True,
            cwd=REPO,
            timeout=60,
            check=True,
        )
        return done.stdout.decode()


@dataclass
class Sent:
    """One SMTP session through HAProxy: which node greeted, and how it ended."""

    node: str  # "mx1"/"mx2" from the greeting; "" when no greeting came
    code: int  # 250 when queued; else the refusing reply's code; 0 when the connection failed
    reply: str
    queue_ids: list[str] = field(default_factory=list)


@dataclass
class Cluster:
    nodes: list[Node]
    receiver: TicketReceiver
    haproxy: DaemonProcess
    frontend_port: int
    stats_port: int
    answers: dict[str, Response]  # per tenant, what the helpdesk answers (default 200)

    def send(
        self, source_ip: str, rcpt: str, *, subject: str = "Help", sender: str = "ada@example.org"
    ) -> Sent:
        """One message in one session from `source_ip`, through HAProxy."""
        client = smtplib.SMTP(timeout=20, source_address=(source_ip, 0))
        try:
            code, banner = client.connect("127.0.0.1", self.frontend_port)
        except (OSError, smtplib.SMTPException) as exc:
            return Sent("", 0, f"{type(exc).__name__}: {exc}")
        node = banner.decode().split(".", 1)[0] if code == 220 else ""
        try:
            with client:
                if code != 220:
                    return Sent(node, code, banner.decode())
                client.ehlo("client.example.org")
                for command, arg in ((client.mail, sender), (client.rcpt, rcpt)):
                    code, reply = command(arg)
                    if code != 250:
                        return Sent(node, code, f"{code} {reply.decode()}")
                code, reply = client.data(message(subject, sender=sender))
                text = reply.decode()
                ids = text.split("queued as ", 1)[1].split() if code == 250 else []
                return Sent(node, code, f"{code} {text}", ids)
        except (OSError, smtplib.SMTPException) as exc:
            return Sent(node, 0, f"{type(exc).__name__}: {exc}")

    def node(self, name: str) -> Node:
        (node,) = [n for n in self.nodes if n.name == name]
        return node

    def server_states(self) -> dict[str, str]:
        """HAProxy's view of the backend servers, e.g. {"mx1": "DOWN", "mx2": "UP"}."""
        url = f"http://127.0.0.1:{self.stats_port}/stats;csv"
        with urllib.request.urlopen(url, timeout=5) as answer:
            text = answer.read().decode().removeprefix("# ")
        return {
            row["svname"]: row["status"]
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "postroom" and row["svname"] not in {"FRONTEND", "BACKEND"}
        }

    def has_states(self, expected: dict[str, str]) -> bool:
        with contextlib.suppress(OSError):
            return self.server_states() == expected
        return False

    def wait_for_states(self, expected: dict[str, str], timeout: float = 15.0) -> bool:
        return wait_until(lambda: self.has_states(expected), timeout=timeout)

    def delivered_keys(self) -> set[str]:
        return {t.idempotency_key for t in self.receiver.accepted if t.idempotency_key}

    def wait_delivered(self, queue_ids: set[str], timeout: float = 30.0) -> bool:
        return wait_until(lambda: queue_ids <= self.delivered_keys(), timeout=timeout, interval=0.1)


def rcpt(tenant: str, mailbox: str = "support") -> str:
    return f"{mailbox}@{tenant}.{DOMAIN}"


def _write_node_config(
    workdir: Path, name: str, receiver_url: str, redis_url: str, prefix: str, rate: int
) -> tuple[Path, int, int]:
    smtp_port, ops_port = free_port(), free_port()
    data = config_mapping(
        workdir / name / "spool",
        receiver_url,
        port=smtp_port,
        smtp={"hostname": f"{name}.helpdesk.test", "proxy_protocol": True},
        webhook={"retry_initial": 0.2, "retry_max_interval": RETRY_CAP},
        redis={"url": redis_url},
        metrics={"listen": f"127.0.0.1:{ops_port}"},
        logging={"format": "json", "level": "info"},
        backpressure={"redis_key": f"{prefix}circuits"},
        filters={
            "throttle": {
                "enabled": True,
                "ip_messages_per_minute": rate,
                "redis_key_prefix": f"{prefix}throttle:",
                **THROTTLE_OFF,
            }
        },
    )
    path = tomlwrite.write(workdir / f"{name}.toml", data)
    return path, smtp_port, ops_port


def _write_haproxy_config(workdir: Path, nodes: list[Node]) -> tuple[Path, int, int]:
    """The fixture template filled in: returns the file, the SMTP frontend's port and the stats port."""
    frontend, stats = free_port(), free_port()
    cfg = string.Template(HAPROXY_TEMPLATE.read_text()).substitute(
        frontend=f"127.0.0.1:{frontend}",
        stats=f"127.0.0.1:{stats}",
        **{node.name: f"127.0.0.1:{node.smtp_port}" for node in nodes},
        **{f"{node.name}_ops": str(node.ops_port) for node in nodes},
    )
    cfg_path = workdir / "haproxy.cfg"
    cfg_path.write_text(cfg)
    return cfg_path, frontend, stats


@contextlib.contextmanager
def running_cluster(workdir: Path, redis: RedisServer, rate_per_minute: int) -> Iterator[Cluster]:
    """Start receiver, both nodes, then HAProxy (ready once it sees both nodes UP); stop all on exit."""
    answers: dict[str, Response] = {}

    def helpdesk(ticket: ReceivedTicket) -> Response:
        return answers.get(ticket.tenant or "", Response())

    receiver = TicketReceiver(SECRET, respond_with=helpdesk)
    prefix = f"postroom-cluster:{uuid.uuid4().hex[:8]}:"
    with receiver.run_in_thread(), contextlib.ExitStack() as stack:
        nodes = []
        for name in ("mx1", "mx2"):
            path, smtp_port, ops_port = _write_node_config(
                workdir, name, receiver.url, redis.url, prefix, rate_per_minute
            )
            log_path = workdir / f"{name}.log"
            process = ServeProcess(path, smtp_port, log_path)
            process.start()
            stack.callback(process.terminate)
            nodes.append(Node(name, smtp_port, ops_port, path, workdir / name / "spool", log_path, process))
        cfg_path, frontend, stats = _write_haproxy_config(workdir, nodes)
        haproxy = DaemonProcess(
            "haproxy",
            [find_binary("haproxy"), "-f", str(cfg_path), "-db"],  # -db: in the foreground
            ready=lambda: cluster.has_states(ALL_UP),
            log_file=workdir / "haproxy.log",
        )
        cluster = Cluster(nodes, receiver, haproxy, frontend, stats, answers)
        haproxy.start()
        stack.callback(haproxy.stop)
        yield cluster
