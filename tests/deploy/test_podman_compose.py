"""deploy/compose.yaml started for real with podman-compose: two nodes behind HAProxy, Redis, Rspamd, ClamAV.

The compose file runs unchanged except for what its variables allow (images, published ports) and the test
override (fixtures/podman/compose/compose.test.yaml: Debian daemons' command lines, the suite's Rspamd and
clamd configs, a helpdesk). Mail goes in over SMTP at HAProxy's port published on 127.0.0.1 and must come
out as signed tickets at the helpdesk, through both nodes; the filters and the shared Redis must show.
"""

from __future__ import annotations

import json
import secrets
import smtplib
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers.clamd import EICAR, EICAR_NAME
from tests.servers.daemon import free_port, wait_until
from tests.servers.rspamd import GTUBE
from tests.support.podman import podman
from tests.support.podman_compose import (
    NODE_CONFIG,
    THIRD_PARTY_SERVICES,
    ComposeProject,
    build_services_image,
    node_config_for_test,
    require_podman_compose,
)

# The first container test of a run also builds the base and Postroom's image (about 70 s when cold).
pytestmark = [pytest.mark.integration, pytest.mark.podman, pytest.mark.timeout(900)]

NODES = ("postroom1", "postroom2")
SERVICES = (*NODES, *THIRD_PARTY_SERVICES, "helpdesk")
RECIPIENT = "support@acme.helpdesk.example"
SENDER = "alice@sender.example"
# Readiness: Rspamd's first start and HAProxy's health checks (every 5 s, two to rise) take most of it.
READY_TIMEOUT = 120.0
# HAProxy keeps a server address whose re-resolution fails for 30 s (its default `hold timeout`), then puts
# the server in maintenance: past that, both nodes still up means its resolvers work on this network.
RESOLVER_HOLD = 30.0


@pytest.fixture
def stack(
    tmp_path: Path, postroom_image: str, podman_base_image: str
) -> Iterator[tuple[ComposeProject, dict[str, int]]]:
    """The compose project, up and ready, and its published loopback ports by name. Always removed."""
    require_podman_compose()
    services_image = build_services_image(podman_base_image)
    secret = secrets.token_hex(32)
    config = tmp_path / "postroom.toml"
    config.write_text(node_config_for_test(NODE_CONFIG.read_text(), secret, dns_timeout=0.5))
    config.chmod(0o644)  # the nodes run as an unprivileged user
    ports = {name: free_port() for name in ("smtp", "stats", "ops1", "ops2")}
    env = {
        "POSTROOM_IMAGE": postroom_image,
        **{f"POSTROOM_{service.upper()}_IMAGE": services_image for service in THIRD_PARTY_SERVICES},
        "POSTROOM_SMTP_PUBLISH": f"127.0.0.1:{ports['smtp']}",
        "POSTROOM_STATS_PORT": str(ports["stats"]),
        "POSTROOM_NODE1_OPS_PORT": str(ports["ops1"]),
        "POSTROOM_NODE2_OPS_PORT": str(ports["ops2"]),
        "POSTROOM_TEST_NODE_CONFIG": str(config),
        "POSTROOM_TEST_WEBHOOK_SECRET": secret,
    }
    project = ComposeProject(env)
    try:
        project.up()
        ready = wait_until(
            lambda: all(node_ready(ports[f"ops{n}"]) for n in (1, 2)) and haproxy_up(ports["stats"]),
            timeout=READY_TIMEOUT,
            interval=0.5,
        )
        assert ready, "stack not ready:\n" + project.diagnostics(SERVICES)
        yield project, ports
    finally:
        project.down()


def node_ready(ops_port: int) -> bool:
    """The node's /readyz: spool writable, and clamd, Rspamd, Redis and the webhook answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ops_port}/readyz", timeout=2) as response:
            return bool(json.load(response)["ready"])
    except (OSError, urllib.error.URLError, ValueError):
        return False


def haproxy_up(stats_port: int) -> bool:
    """HAProxy's own health checks (the nodes' /readyz) have marked both nodes UP."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/stats;csv", timeout=2) as response:
            rows = [line.split(",") for line in response.read().decode().splitlines()]
    except OSError:
        return False
    status = {row[1]: row[17] for row in rows if len(row) > 17 and row[0] == "postroom"}
    return all(status.get(node) == "UP" for node in NODES)


def send(smtp_port: int, subject: str, body: bytes = b"Hello from the compose test.") -> tuple[int, str]:
    """One message through HAProxy; the final reply (code, text), whether 250 or a refusal."""
    message = f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: {subject}\r\n\r\n".encode() + body + b"\r\n"
    with smtplib.SMTP("127.0.0.1", smtp_port, local_hostname="client.example", timeout=30) as client:
        client.ehlo()
        client.mail(SENDER)
        code, reply = client.rcpt(RECIPIENT)
        assert code == 250, (code, reply)
        try:
            code, reply = client.data(message)
        except smtplib.SMTPDataError as refused:
            return refused.smtp_code, as_text(refused.smtp_error)
    return code, reply.decode()


def connect_reply(smtp_port: int) -> tuple[int, str]:
    """The greeting HAProxy's chosen node gives a new session: 220, or a refusal at connect."""
    try:
        with smtplib.SMTP("127.0.0.1", smtp_port, local_hostname="client.example", timeout=30):
            return 220, "greeted"
    except smtplib.SMTPConnectError as refused:
        return refused.smtp_code, as_text(refused.smtp_error)


def as_text(reply: bytes | str) -> str:
    return reply.decode() if isinstance(reply, bytes) else reply


def node_events(project: ComposeProject, event: str, **fields: str) -> list[tuple[str, dict[str, Any]]]:
    """Every (node, log event) matching `event` and `fields` in the nodes' JSON logs."""
    return [
        (node, entry)
        for node in NODES
        for entry in project.events(node)
        if entry.get("event") == event and all(entry.get(k) == v for k, v in fields.items())
    ]


def wait_for_events(
    project: ComposeProject, count: int, event: str, **fields: str
) -> list[tuple[str, dict[str, Any]]]:
    """The matching events once there are at least `count` (the log reaches podman just after the reply)."""
    found: list[tuple[str, dict[str, Any]]] = []

    def enough() -> bool:
        found[:] = node_events(project, event, **fields)
        return len(found) >= count

    assert wait_until(enough, timeout=10, interval=0.2), (event, fields, project.diagnostics(SERVICES))
    return found


def test_podman_compose_stack_delivers_through_both_nodes_with_filters_and_shared_redis(
    stack: tuple[ComposeProject, dict[str, int]],
) -> None:
    project, ports = stack
    smtp_port = ports["smtp"]

    # Mail through HAProxy until each node has queued one (leastconn alternates; bounded).
    queued_by: dict[str, dict[str, Any]] = {}
    subjects: list[str] = []
    for _ in range(6):
        subject = f"compose smoke {uuid.uuid4().hex[:8]}"
        code, reply = send(smtp_port, subject)
        assert code == 250 and "queued as" in reply, (code, reply, project.diagnostics(SERVICES))
        [(node, entry)] = wait_for_events(project, 1, "queued", queue_id=reply.rsplit(" ", 1)[-1])
        queued_by.setdefault(node, entry)
        subjects.append(subject)
        if len(queued_by) == len(NODES):
            break
    assert set(queued_by) == set(NODES), queued_by

    # The helpdesk verified each ticket's signature (it prints only those) and got every one.
    def helpdesk_log() -> str:
        return project.logs("helpdesk")

    assert wait_until(
        lambda: all(
            f"ticket acme/support from <{SENDER}>: {s}" in project.logs("helpdesk") for s in subjects
        ),
        timeout=30,
        interval=0.2,
    ), project.diagnostics(SERVICES)

    # ClamAV and Rspamd ran on each accepted message; the node saw the real client, not HAProxy (PROXY v2).
    haproxy_ip = project.address("haproxy")
    for node, entry in queued_by.items():
        assert "data/clamav=pass" in entry["verdicts"] and "data/rspamd=pass" in entry["verdicts"], entry
        assert entry["client_ip"] != haproxy_ip, (node, entry)
        [(_, spam_check)] = node_events(project, "spam_check", queue_id=entry["queue_id"])
        assert spam_check["symbols"], spam_check  # Rspamd's real rules matched something

    # Refusals come from the daemons themselves: clamd finds EICAR, Rspamd rejects GTUBE.
    code, reply = send(smtp_port, "eicar", EICAR)
    assert (code, reply) == (554, f"5.7.1 message rejected: virus found: {EICAR_NAME}")
    code, reply = send(smtp_port, "gtube", GTUBE)
    assert code == 554 and reply.startswith("5.7.1 message rejected as spam: reject, score"), (code, reply)

    # Redis is shared: a block added through node 1's CLI is listed by node 2 and enforced by both nodes.
    client_ip = queued_by[NODES[0]]["client_ip"]
    config = "/etc/postroom/postroom.toml"
    project.exec(NODES[0], "postroom", "block", "add", client_ip, "--config", config)
    listed = json.loads(project.exec(NODES[1], "postroom", "block", "list", "--json", "--config", config))
    assert [entry["network"] for entry in listed] == [f"{client_ip}/32"]
    refused_by: set[str] = set()
    for attempt in range(1, 7):
        code, reply = connect_reply(smtp_port)
        assert code == 554 and f"client blocked: {client_ip}" in reply, (code, reply)
        refused = wait_for_events(project, attempt, "refused", reason="throttle.blocked")
        refused_by = {node for node, _ in refused}
        if refused_by == set(NODES):
            break
    assert refused_by == set(NODES)

    # HAProxy re-resolves the node names through the network's DNS (parse-resolv-conf): a resolver that does
    # not answer there (Docker's 127.0.0.11 under podman) puts both nodes in maintenance once the hold ends.
    # This waits out a fixed period on HAProxy's clock, so it is a sleep, not a poll.
    time.sleep(max(0.0, project.started_at("haproxy") + RESOLVER_HOLD + 3 - time.time()))
    assert haproxy_up(ports["stats"]), project.diagnostics(SERVICES)

    # `stop` sends SIGTERM and waits the file's stop_grace_period: both nodes drain and exit cleanly, which
    # podman would otherwise report as 137 (killed at the end of the grace period).
    project.compose("stop")
    for node in NODES:
        state = podman("inspect", "--format", "{{.State.ExitCode}}", project.container(node)).stdout.strip()
        assert state == "0", (node, state, project.logs(node)[-2000:])
        assert '"event":"stopped"' in project.logs(node), node
