"""The container image, built and run for real with podman, by the README's own commands.

The image is built from this checkout (tests/deploy/conftest.py), started with a config derived from
deploy/podman/postroom.toml whose webhook points at a real helpdesk on the host's loopback, and fed over SMTP
on its published port. Then SIGTERM arrives while one message is being delivered and another is in DATA:
the drain must finish the DATA with its 250, exit cleanly, and leave both in the spool volume, from which
the next start delivers them.

The container reaches the host's loopback through slirp4netns (`allow_host_loopback`, where the host's
127.0.0.1 is 10.0.2.2): the suite's traffic stays on loopback. In production the container reaches the
helpdesk by its real address and needs no such option.
"""

from __future__ import annotations

import json
import os
import smtplib
import subprocess
import threading
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest

from postroom.helpdesk.receiver import ReceivedTicket, Response, TicketReceiver
from tests.support import tomlwrite
from tests.support.harness import SECRET, free_port
from tests.support.podman import (
    ROOT,
    adapt,
    podman,
    podman_env,
    readme_podman_commands,
    remove_container,
    remove_volume,
    run_command,
)

# The first test also builds the base image and the image (about 70 s on a cold machine, then cached).
pytestmark = [pytest.mark.integration, pytest.mark.podman, pytest.mark.timeout(900)]

TENANT_DOMAIN = "helpdesk.test"
HOST_LOOPBACK_FROM_CONTAINER = "10.0.2.2"  # slirp4netns's alias for the host's 127.0.0.1
IMAGE_GID = 10025  # the image's postroom group (deploy/Containerfile)
SLIRP_NETWORK = "slirp4netns:allow_host_loopback=true"
SHUTDOWN_GRACE = 5.0  # short, so a delivery hanging at SIGTERM is cut off quickly (it stays spooled)
STARTUP_TIMEOUT = 60.0
DELIVERY_TIMEOUT = 60.0


@dataclass
class Helpdesk:
    """The real ticket receiver on the host's loopback; `hang` holds every answer (a stuck helpdesk)."""

    receiver: TicketReceiver
    hang: threading.Event = field(default_factory=threading.Event)

    def answered_subjects(self) -> list[str]:
        """Subjects of tickets whose 2xx answer was sent (a held answer is not a delivery yet)."""
        return [
            str(t.payload.get("subject"))
            for t in self.receiver.accepted
            if t.payload is not None and t.bytes_sent > 0
        ]

    def attempts_for(self, subject: str) -> list[ReceivedTicket]:
        return [
            t for t in self.receiver.tickets if t.payload is not None and t.payload.get("subject") == subject
        ]


@dataclass
class Container:
    name: str
    volume: str
    smtp_port: int
    ops_port: int
    readme: dict[str, list[str]]
    replace: dict[str, str]

    def command(self, verb: str) -> list[str]:
        """The README's `podman VERB ...` line with this test's names and ports."""
        return adapt(self.readme[verb], self.replace, ports={"2525": self.smtp_port, "9100": self.ops_port})

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr


@pytest.fixture
def helpdesk() -> Iterator[Helpdesk]:
    hang = threading.Event()

    def answer(ticket: ReceivedTicket) -> Response:
        return Response(delay=300.0) if hang.is_set() else Response()

    receiver = TicketReceiver(SECRET, host="127.0.0.1", respond_with=answer)
    with receiver.run_in_thread():
        yield Helpdesk(receiver, hang)


def container_config(path: Path, webhook_port: int, *, ops_endpoint: bool = True) -> Path:
    """deploy/podman/postroom.toml with this test's domain, webhook and secret; the rest as shipped."""
    config = tomllib.loads((ROOT / "deploy" / "podman" / "postroom.toml").read_text())
    config["routing"]["domains"] = [TENANT_DOMAIN]
    config["webhook"].update(
        url=f"http://{HOST_LOOPBACK_FROM_CONTAINER}:{webhook_port}/tickets",
        secret=SECRET,
        timeout=120.0,  # longer than the test's hanging helpdesk holds: SIGTERM, not a timeout, ends it
    )
    config["delivery"] = {"shutdown_grace": SHUTDOWN_GRACE}
    if not ops_endpoint:
        del config["metrics"]
    tomlwrite.write(path, config)
    # As the README installs it: 0640, group 10025, so the container's unprivileged user can read it.
    os.chown(path, 0, IMAGE_GID)
    path.chmod(0o640)
    return path


@pytest.fixture
def container(postroom_image: str, helpdesk: Helpdesk, tmp_path: Path) -> Iterator[Container]:
    suffix = f"{int(time.time() * 1000) % 10**9}"
    name, volume = f"postroom-suite-{suffix}", f"postroom-suite-spool-{suffix}"
    config = container_config(tmp_path / "postroom.toml", helpdesk.receiver.port)
    replace = {
        "postroom": name,
        "postroom-spool": volume,
        "/etc/postroom/postroom.toml": str(config),
        "postroom:local": postroom_image,
    }
    made = Container(name, volume, free_port(), free_port(), readme_podman_commands(), replace)
    try:
        yield made
    finally:
        remove_container(name)
        remove_volume(volume)


def start(container: Container) -> None:
    """The README's `podman run`, plus the network that lets the container reach the host's loopback."""
    run = container.command("run")
    run_command([*run[:2], "--network", SLIRP_NETWORK, *run[2:]])
    wait_until_ready(container)


def ops_status(container: Container, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{container.ops_port}{path}", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def wait_until_ready(container: Container) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while ops_status(container, "/readyz") != 200:
        if time.monotonic() > deadline:
            pytest.fail(f"the container never became ready:\n{container.logs()[-3000:]}")
        time.sleep(0.2)


def message(subject: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "Customer <customer@example.org>"
    mail["To"] = f"support@acme.{TENANT_DOMAIN}"
    mail["Subject"] = subject
    mail["Message-ID"] = f"<{subject.replace(' ', '-')}@example.org>"
    mail.set_content(f"Body of {subject}.\n")
    return mail


def send(container: Container, subject: str) -> None:
    with smtplib.SMTP(
        "127.0.0.1", container.smtp_port, local_hostname="client.example.org", timeout=30
    ) as smtp:
        refused = smtp.send_message(message(subject))
    assert refused == {}


def wait_for_subjects(helpdesk: Helpdesk, subjects: set[str], container: Container) -> None:
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while not subjects <= set(helpdesk.answered_subjects()):
        if time.monotonic() > deadline:
            pytest.fail(
                f"tickets {sorted(subjects)} not all delivered: got {helpdesk.answered_subjects()}\n"
                f"{container.logs()[-3000:]}"
            )
        time.sleep(0.1)


def wait_for_attempt(helpdesk: Helpdesk, subject: str) -> None:
    deadline = time.monotonic() + DELIVERY_TIMEOUT
    while not helpdesk.attempts_for(subject):
        assert time.monotonic() < deadline, f"no delivery attempt for {subject!r}"
        time.sleep(0.05)


def inspect(reference: str, template: str, *, image: bool = False) -> str:
    kind = ("image", "inspect") if image else ("container", "inspect")
    return podman(*kind, "--format", template, reference).stdout.strip()


def test_podman_image_runs_unprivileged_with_spool_volume_and_healthcheck(
    container: Container, postroom_image: str
) -> None:
    assert inspect(postroom_image, "{{.Config.User}}", image=True) == "postroom"
    assert "/var/spool/postroom" in inspect(postroom_image, "{{json .Config.Volumes}}", image=True)
    healthcheck = json.loads(inspect(postroom_image, "{{json .Config.Healthcheck}}", image=True))
    assert any("/healthz" in part for part in healthcheck["Test"]), healthcheck

    start(container)
    assert podman("exec", container.name, "id", "-u").stdout.strip() == "10025"
    mounts = json.loads(inspect(container.name, "{{json .Mounts}}"))
    spool = [m for m in mounts if m["Destination"] == "/var/spool/postroom"]
    assert spool and spool[0]["Name"] == container.volume, mounts
    healthcheck_run = run_command(container.command("healthcheck"), check=False)
    assert healthcheck_run.returncode == 0, healthcheck_run.stdout + healthcheck_run.stderr


def test_podman_healthcheck_fails_when_healthz_does_not_answer(
    container: Container, helpdesk: Helpdesk, tmp_path: Path
) -> None:
    # The same image and config, but without [metrics] listen: SMTP is served, /healthz is not.
    container_config(tmp_path / "postroom.toml", helpdesk.receiver.port, ops_endpoint=False)
    run = container.command("run")
    run_command([*run[:2], "--network", SLIRP_NETWORK, *run[2:]])
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while '"event":"started"' not in container.logs():
        assert time.monotonic() < deadline, container.logs()[-3000:]
        time.sleep(0.2)
    healthcheck_run = run_command(container.command("healthcheck"), check=False)
    assert healthcheck_run.returncode != 0
    assert "unhealthy" in healthcheck_run.stdout


def test_podman_container_delivers_a_signed_ticket(container: Container, helpdesk: Helpdesk) -> None:
    start(container)
    send(container, "printer on fire")
    wait_for_subjects(helpdesk, {"printer on fire"}, container)
    ticket = helpdesk.attempts_for("printer on fire")[0]
    assert ticket.signature_ok and ticket.tenant == "acme"
    assert ticket.payload is not None
    assert (ticket.payload["tenant"], ticket.payload["mailbox"]) == ("acme", "support")
    assert ticket.payload["envelope"]["helo"] == "client.example.org"
    assert "Body of printer on fire." in ticket.payload["text"]


def test_podman_sigterm_drains_and_loses_nothing(container: Container, helpdesk: Helpdesk) -> None:
    start(container)
    helpdesk.hang.set()
    send(container, "in delivery at sigterm")  # 250 given; its delivery now hangs at the helpdesk
    wait_for_attempt(helpdesk, "in delivery at sigterm")

    in_data = smtplib.SMTP("127.0.0.1", container.smtp_port, local_hostname="client.example.org", timeout=60)
    in_data.ehlo()
    in_data.mail("customer@example.org")
    in_data.rcpt(f"support@acme.{TENANT_DOMAIN}")
    code, _ = in_data.docmd("DATA")
    assert code == 354

    started = time.monotonic()
    stop = subprocess.Popen(
        container.command("stop"), env=podman_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        # SIGTERM has arrived once /readyz reports the drain; the open transaction may still finish.
        deadline = time.monotonic() + 30
        while ops_status(container, "/readyz") != 503:
            assert time.monotonic() < deadline, "the container never started draining"
            time.sleep(0.05)
        in_data.send(message("in data at sigterm").as_bytes().replace(b"\n", b"\r\n") + b"\r\n.\r\n")
        code, reply = in_data.getreply()
        assert code == 250, reply
        in_data.quit()
        stop.wait(timeout=90)
    finally:
        if stop.poll() is None:
            stop.kill()
    stopped_after = time.monotonic() - started
    assert stop.returncode == 0, stop.stderr.read() if stop.stderr else ""
    assert inspect(container.name, "{{.State.ExitCode}}") == "0", container.logs()[-3000:]
    assert stopped_after < 60, f"the drain took {stopped_after:.1f} s: podman had to SIGKILL"
    assert helpdesk.answered_subjects() == []

    helpdesk.hang.clear()
    podman("start", container.name)
    wait_for_subjects(helpdesk, {"in delivery at sigterm", "in data at sigterm"}, container)
    # The delivery cut off by SIGTERM was made again after the restart, from the spool volume.
    assert len(helpdesk.attempts_for("in delivery at sigterm")) >= 2
    dead = podman(
        "exec", container.name, "postroom", "dead-letter", "list", "--config", "/etc/postroom/postroom.toml"
    )
    assert "in delivery" not in dead.stdout and "in data" not in dead.stdout


def test_podman_kill_9_loses_nothing(container: Container, helpdesk: Helpdesk) -> None:
    start(container)
    helpdesk.hang.set()
    send(container, "in delivery at kill -9")  # 250 given, fsynced to the volume; the delivery hangs
    wait_for_attempt(helpdesk, "in delivery at kill -9")
    podman("kill", "--signal", "KILL", container.name)
    podman("wait", container.name)
    assert inspect(container.name, "{{.State.ExitCode}}") == "137"  # no drain: the process was killed

    # A new container (as after an image upgrade) on the same spool volume delivers it.
    podman("rm", "--volumes", container.name)  # anonymous volumes only: the named spool stays
    helpdesk.hang.clear()
    start(container)
    wait_for_subjects(helpdesk, {"in delivery at kill -9"}, container)
