"""The files in deploy/: checked with the real tools where this machine has them.

HAProxy's config is validated with `haproxy -c` and then run for real on loopback, rewritten only where the
compose network differs (addresses, ports, check interval); the systemd unit goes through
`systemd-analyze verify` and `security`; the dashboard's queries are matched against the metric registry.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import socket
import subprocess
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.metrics_core import Metric

from postroom.app.config import load_config
from postroom.app.ops_http import OpsServer
from postroom.app.readiness import CheckResult
from postroom.core.configload import parse_hostport
from postroom.core.metrics import Metrics
from postroom.core.spool import Spool

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
UNIT = DEPLOY / "systemd" / "postroom.service"
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


# ---- HAProxy -----------------------------------------------------------------------------------------------

haproxy = shutil.which("haproxy")
needs_haproxy = pytest.mark.skipif(haproxy is None, reason="haproxy is not installed")


@needs_haproxy
def test_haproxy_config_is_valid() -> None:
    assert haproxy is not None
    done = subprocess.run([haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    warnings = [line for line in done.stderr.splitlines() if "[WARNING]" in line]
    # The compose service names do not resolve outside compose; anything else is a real warning.
    assert all("could not resolve address 'postroom" in w for w in warnings), warnings


def test_haproxy_targets_match_the_compose_node_config() -> None:
    node = load_config(DEPLOY / "compose" / "postroom.toml")
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    smtp_port = parse_hostport(node.smtp.listen, "listen")[1]
    ops_port = parse_hostport(node.metrics.listen, "listen")[1]
    assert node.smtp.proxy_protocol, "HAProxy sends PROXY v2: the nodes must expect it"
    assert re.findall(r"^\s*server \S+ postroom\d:(\d+)", cfg, re.M) == [str(smtp_port)] * 2
    assert re.search(rf"^\s*default-server send-proxy-v2 check port {ops_port}\b", cfg, re.M)
    assert re.search(r"^\s*http-check send meth GET uri /readyz$", cfg, re.M)


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def loopback_variant(cfg: str, *, smtp: int, node_port: int, ops_port: int, stats: int) -> str:
    """The shipped config with compose names and ports swapped for loopback ones (each swap must apply)."""
    swaps = [
        (r"bind :2525\b", f"bind 127.0.0.1:{smtp}", 1),
        (r"bind :8404\b", f"bind 127.0.0.1:{stats}", 1),
        (r"postroom1:2525", f"127.0.0.2:{node_port}", 1),
        (r"postroom2:2525", f"127.0.0.3:{node_port}", 1),
        (r"check port 9100 inter 5s", f"check port {ops_port} inter 100ms", 1),
    ]
    for pattern, replacement, count in swaps:
        cfg, made = re.subn(pattern, replacement, cfg)
        assert made == count, f"deploy/haproxy.cfg no longer contains {pattern!r}"
    return cfg


@pytest.fixture
def haproxy_ports() -> Iterator[dict[str, int]]:
    yield {
        "smtp": free_port("127.0.0.1"),
        "stats": free_port("127.0.0.1"),
        "node": free_port("127.0.0.2"),
        "ops": free_port("127.0.0.2"),
    }


@needs_haproxy
def test_haproxy_sends_the_client_ip_and_drains_an_unready_node(
    tmp_path: Path, haproxy_ports: dict[str, int]
) -> None:
    """Two fake nodes that decode PROXY v2 and report the client IP; node 1's /readyz then fails."""
    assert haproxy is not None
    ports = haproxy_ports
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(
        loopback_variant(
            (DEPLOY / "haproxy.cfg").read_text(),
            smtp=ports["smtp"],
            node_port=ports["node"],
            ops_port=ports["ops"],
            stats=ports["stats"],
        )
    )
    ready = {"127.0.0.2": True, "127.0.0.3": True}

    async def node(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        header = await reader.readexactly(16)
        assert header[:12] == PROXY_V2_SIGNATURE and header[13] == 0x11  # TCP over IPv4
        addresses = await reader.readexactly(int.from_bytes(header[14:16], "big"))
        me = writer.get_extra_info("sockname")[0]
        writer.write(f"{me} {socket.inet_ntoa(addresses[:4])}\n".encode())
        await writer.drain()
        writer.close()

    def readiness(ip: str) -> list[Callable[[], Awaitable[CheckResult]]]:
        async def check() -> CheckResult:
            return "node", ready[ip], ""

        return [check]

    async def ask(client_ip: str) -> tuple[str, str]:
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["smtp"], local_addr=(client_ip, 0))
        line = (await asyncio.wait_for(reader.readline(), 5)).decode().split()
        writer.close()
        return line[0], line[1]

    async def scenario() -> None:
        servers = [await asyncio.start_server(node, ip, ports["node"]) for ip in ready]
        ops = [
            OpsServer(f"{ip}:{ports['ops']}", Metrics(process_metrics=False), readiness(ip)) for ip in ready
        ]
        for server in ops:
            await server.start()
        log = (tmp_path / "haproxy.log").open("w")
        proc = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT)
        try:
            seen: set[tuple[str, str]] = set()
            deadline = time.monotonic() + 10
            while len({n for n, _ in seen}) < 2 and time.monotonic() < deadline:
                assert proc.poll() is None, (tmp_path / "haproxy.log").read_text()
                try:
                    seen.add(await ask("127.0.0.4"))
                    seen.add(await ask("127.0.0.5"))
                except (ConnectionError, asyncio.IncompleteReadError, IndexError):
                    await asyncio.sleep(0.1)  # HAProxy still starting
            assert {n for n, _ in seen} == {"127.0.0.2", "127.0.0.3"}, seen
            assert {c for _, c in seen} == {"127.0.0.4", "127.0.0.5"}  # each node saw the real client

            ready["127.0.0.2"] = False
            # Marked down after 2 failed checks 100 ms apart; then every new session goes to node 2.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                answers = {n for n, _ in [await ask("127.0.0.4") for _ in range(6)]}
                if answers == {"127.0.0.3"}:
                    break
                await asyncio.sleep(0.1)
            assert answers == {"127.0.0.3"}
        finally:
            proc.terminate()
            proc.wait(timeout=5)
            log.close()
            for server in ops:
                await server.stop()
            for s in servers:
                s.close()
                await s.wait_closed()

    asyncio.run(asyncio.wait_for(scenario(), timeout=25))


# ---- systemd -----------------------------------------------------------------------------------------------


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Sections → ordered (key, value) pairs; systemd allows a key more than once, so no configparser."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections.setdefault(current, [])
            continue
        key, sep, value = line.partition("=")
        assert sep and current, f"{path.name}: not a key=value line in a section: {raw!r}"
        sections[current].append((key.strip(), value.strip()))
    return sections


def test_unit_has_the_hardening_the_deployment_relies_on() -> None:
    service = dict(unit_entries(UNIT)["Service"])
    expected = {
        "User": "postroom",
        "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
        "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/spool/postroom",
        "PrivateTmp": "yes",
        "ProtectHome": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "ExecReload": "/bin/kill -HUP $MAINPID",
        "Restart": "on-failure",
    }
    assert {k: service.get(k) for k in expected} == expected
    filters = [v for k, v in unit_entries(UNIT)["Service"] if k == "SystemCallFilter"]
    assert filters[0] == "@system-service"
    assert unit_entries(UNIT)["Install"] == [("WantedBy", "multi-user.target")]


systemd_analyze = shutil.which("systemd-analyze")


@pytest.mark.skipif(systemd_analyze is None, reason="systemd-analyze is not installed")
def test_unit_passes_systemd_analyze_verify_and_security(tmp_path: Path) -> None:
    assert systemd_analyze is not None
    # verify insists the ExecStart binary exists: point it at a stub, change nothing else.
    stub = tmp_path / "postroom"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    unit = tmp_path / "postroom.service"
    unit.write_text(UNIT.read_text().replace("/opt/postroom/bin/postroom", str(stub)))

    verify = subprocess.run([systemd_analyze, "verify", str(unit)], capture_output=True, text=True)
    # Unknown or misspelt keys are only warnings to systemd (exit 0): treat any output as a failure.
    assert verify.returncode == 0 and not verify.stderr.strip(), verify.stderr

    security = subprocess.run(
        [systemd_analyze, "security", "--offline=yes", "--threshold=20", str(unit)],
        capture_output=True,
        text=True,
    )
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout)
    assert security.returncode == 0 and exposure, security.stdout[-2000:]
    assert float(exposure.group(1)) <= 2.0


# ---- dashboard, container files, docs ----------------------------------------------------------------------


def exposed_names(metrics: Metrics) -> set[str]:
    """Every series name the registry can expose (histogram and counter families expand to their suffixes)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "info": ("_info",)}
    names: set[str] = set()
    family: Metric
    for family in metrics.registry.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def test_dashboard_queries_only_metrics_that_exist(tmp_path: Path) -> None:
    metrics = Metrics()
    metrics.watch_spool("inbound", Spool(tmp_path / "spool").create())
    known = exposed_names(metrics)
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\b((?:postroom|process)_[a-z0-9_]+)\b", e)}
    assert len(exprs) >= 10 and "postroom_spool_messages" in used
    assert used <= known, sorted(used - known)
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"] if "targets" in p)


def test_readme_documents_every_postroom_metric(tmp_path: Path) -> None:
    metrics = Metrics(process_metrics=False)
    readme = (DEPLOY / "README.md").read_text()
    documented = set(re.findall(r"`(postroom_[a-z0-9_]+)`", readme))
    families = {f.name for f in metrics.registry.collect()}
    expected = {n + "_total" if n + "_total" in exposed_names(metrics) else n for n in families}
    assert expected == documented


def test_container_files_reference_what_exists() -> None:
    containerfile = (DEPLOY / "Containerfile").read_text()
    assert re.findall(r"^FROM (\$\{BASE\})", containerfile, re.M) == ["${BASE}"] * 2
    assert re.search(r"^ARG BASE=docker.io/library/python:3.11-slim-bookworm$", containerfile, re.M)
    user = re.findall(r"^USER (\S+)", containerfile, re.M)
    assert user == ["postroom"]
    copied = set()
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", containerfile, re.M):
        for path in source.split():
            assert (REPO / path).exists(), path
            copied.add(path)
    # Every package the wheel is built from is in the image (pyproject's packages.find).
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert {pattern.rstrip("*") for pattern in packages["include"]} <= copied
    compose = (DEPLOY / "compose.yaml").read_text()
    assert re.search(r"dockerfile: deploy/Containerfile$", compose, re.M)
    for path in re.findall(r"- (\./[^:]+):", compose):
        assert (DEPLOY / path).is_file(), path
    for service in ("postroom1", "postroom2", "haproxy", "redis", "rspamd", "clamav"):
        assert re.search(rf"^  {service}:$", compose, re.M), service


def test_compose_images_and_ports_are_variables_with_production_defaults() -> None:
    """What the compose smoke test swaps (images, published ports) goes through variables only, and the
    defaults stay the official images and the documented ports."""
    compose = (DEPLOY / "compose.yaml").read_text()
    assert re.findall(r"^\s*image: (\S+)", compose, re.M) == [
        "${POSTROOM_IMAGE:-postroom:local}",
        "${POSTROOM_HAPROXY_IMAGE:-docker.io/library/haproxy:2.6}",
        "${POSTROOM_REDIS_IMAGE:-docker.io/library/redis:7-alpine}",
        "${POSTROOM_RSPAMD_IMAGE:-docker.io/rspamd/rspamd:latest}",
        "${POSTROOM_CLAMAV_IMAGE:-docker.io/clamav/clamav:stable}",
    ]
    assert re.findall(r'^\s*- "([^"]+)"', compose, re.M) == [
        "127.0.0.1:${POSTROOM_NODE1_OPS_PORT:-9101}:9100",
        "127.0.0.1:${POSTROOM_NODE2_OPS_PORT:-9102}:9100",
        "${POSTROOM_SMTP_PUBLISH:-25}:2525",
        "127.0.0.1:${POSTROOM_STATS_PORT:-8404}:8404",
    ]
    # podman-compose cannot wait for health where no systemd runs the checks: readiness gates the nodes.
    assert not re.search(r"^\s*condition: service_healthy", compose, re.M)
