"""Starting deploy/compose.yaml with podman-compose from the suite, with local images and loopback ports.

No registry is reachable, so the four third-party services (HAProxy, Redis, Rspamd, ClamAV) run from one
local image of Debian's packages (fixtures/podman/compose/Containerfile) and fixtures/podman/compose/
compose.test.yaml gives them the command lines and test configs the registry images would not need. The
compose file itself is used unchanged: everything the test varies goes through its environment variables.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support.podman import (
    BUILD_TIMEOUT,
    ROOT,
    build_test_options,
    podman,
    require_podman,
    run_command,
)

COMPOSE_FILE = ROOT / "deploy" / "compose.yaml"
NODE_CONFIG = ROOT / "deploy" / "compose" / "postroom.toml"
FIXTURES = ROOT / "fixtures" / "podman" / "compose"
TEST_OVERRIDE = FIXTURES / "compose.test.yaml"
SERVICES_IMAGE = "localhost/postroom-compose-services:suite"
THIRD_PARTY_SERVICES = ("haproxy", "redis", "rspamd", "clamav")
COMPOSE_TIMEOUT = 180.0
HELPDESK_URL = "http://helpdesk:8025/tickets"


def require_podman_compose() -> None:
    """Skip (or fail, where the CI command demands container tests) when podman-compose is missing."""
    require_podman()
    if importlib.util.find_spec("podman_compose") is None:
        reason = "podman-compose is not installed (pip install -e '.[test]')"
        if os.environ.get("POSTROOM_REQUIRE_PODMAN") == "1":
            pytest.fail(f"POSTROOM_REQUIRE_PODMAN=1 but {reason}")
        pytest.skip(reason)


def build_services_image(base_image: str) -> str:
    """The stand-in image for the registry services; podman's layer cache makes a rebuild instant."""
    run_command(
        [
            "podman",
            "build",
            "-f",
            str(FIXTURES / "Containerfile"),
            "-t",
            SERVICES_IMAGE,
            *build_test_options(base_image),
            str(FIXTURES),
        ],
        timeout=BUILD_TIMEOUT,
    )
    return SERVICES_IMAGE


def node_config_for_test(shipped: str, secret: str, dns_timeout: float) -> str:
    """deploy/compose/postroom.toml with what the test network needs changed; each swap must apply once.

    The webhook goes to the test helpdesk, with a real secret (serve refuses the shipped placeholder). There
    is no DNS server in the test network, and none outside may be asked: lookups go to a closed port in the
    node's own container and time out after `dns_timeout`, and the two filters that refuse mail when the
    sender's domain does not resolve (SPF temperror 451, FQDN 450) are switched off. DKIM/DMARC stays on
    (observe mode) and records temperror.
    """
    swaps = [
        (r'^url = "https://helpdesk\.example/api/inbound-mail"$', f'url = "{HELPDESK_URL}"'),
        (r'^secret = "change-me".*$', f'secret = "{secret}"'),
        (r"^\[filters\.spf\]\nenabled = true$", "[filters.spf]\nenabled = false"),
        (r"^\[filters\.fqdn\]\nenabled = true$", "[filters.fqdn]\nenabled = false"),
    ]
    config = shipped
    for pattern, replacement in swaps:
        config, made = re.subn(pattern, replacement, config, flags=re.M)
        assert made == 1, f"{NODE_CONFIG.name} no longer contains {pattern!r}"
    assert not re.search(r"^\[dns\]", config, re.M), f"{NODE_CONFIG.name} has a [dns] section now"
    return config + f'\n[dns]\nnameservers = ["127.0.0.1"]\ntimeout = {dns_timeout}\n'


@dataclass
class ComposeProject:
    """One podman-compose project of deploy/compose.yaml plus the test override, named uniquely."""

    env: dict[str, str]
    name: str = field(default_factory=lambda: f"postroom-test-{uuid.uuid4().hex[:10]}")

    def compose(self, *args: str, timeout: float = COMPOSE_TIMEOUT) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "podman_compose", "-p", self.name]
        argv += ["-f", str(COMPOSE_FILE), "-f", str(TEST_OVERRIDE), *args]
        return run_command(argv, timeout=timeout, extra_env=self.env)

    def up(self) -> None:
        self.compose("up", "--detach")

    def down(self) -> None:
        """Remove containers, network and volumes; the test's own clean-up, so a short stop timeout."""
        self.compose("down", "--volumes", "--timeout", "10", timeout=120)

    def container(self, service: str) -> str:
        """The container of `service` (podman-compose names it <project>_<service>_1)."""
        return f"{self.name}_{service}_1"

    def logs(self, service: str) -> str:
        done = podman("logs", self.container(service), check=False)
        return done.stdout + done.stderr

    def events(self, service: str) -> list[dict[str, Any]]:
        """A node's JSON log lines ([logging] format = "json"); other lines are skipped."""
        events = []
        for line in self.logs(service).splitlines():
            if line.startswith("{"):
                try:
                    events.append(json.loads(line))
                except ValueError:
                    continue
        return events

    def exec(self, service: str, *argv: str) -> str:
        return podman("exec", self.container(service), *argv).stdout

    def address(self, service: str) -> str:
        template = "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}"
        return podman("inspect", "--format", template, self.container(service)).stdout.strip()

    def started_at(self, service: str) -> float:
        """When the service's container started, in Unix seconds (the host clock the test also reads)."""
        return float(
            podman("inspect", "--format", "{{.State.StartedAt.Unix}}", self.container(service)).stdout
        )

    def diagnostics(self, services: tuple[str, ...]) -> str:
        """Every service's last log lines and the containers' states, for a failure message."""
        states = podman(
            "ps", "--all", "--filter", f"label=io.podman.compose.project={self.name}", check=False
        )
        parts = [states.stdout]
        for service in services:
            parts.append(f"--- {service}\n" + "\n".join(self.logs(service).splitlines()[-15:]))
        return "\n".join(parts)
