"""Running podman from the suite: the test-only settings, the locally built base image and Postroom's image.

No container registry is reachable here, so the base is made from Debian packages by
deploy/podman/local-base-image.sh (cached in podman's image store by its recipe hash) and passed to
deploy/Containerfile as `BASE`. podman reads fixtures/podman/containers.conf through CONTAINERS_CONF, so the
machine's own configuration is never changed.

Where podman cannot run (not installed, or not root: the base image needs debootstrap as root) the container
tests skip with the reason, except under `POSTROOM_REQUIRE_PODMAN=1` (set by tests/run, the CI command, when
run as root), where a machine that should run them and cannot is a failure, not a silent skip.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "fixtures" / "podman" / "containers.conf"
BASE_IMAGE_SCRIPT = ROOT / "deploy" / "podman" / "local-base-image.sh"
CONTAINERFILE = ROOT / "deploy" / "Containerfile"
POSTROOM_TEST_IMAGE = "localhost/postroom:suite"
# A TLS-intercepting proxy between this machine and PyPI signs with a CA only the host trusts: the build
# gets the host's bundle as the optional `pip-ca` secret the Containerfile documents.
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")

BUILD_TIMEOUT = 900.0
COMMAND_TIMEOUT = 120.0


class PodmanError(RuntimeError):
    """A podman command failed; the message carries its output."""


def podman_env() -> dict[str, str]:
    return {**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)}


def unavailable_reason() -> str | None:
    """Why the container tests cannot run on this machine, or None when they can."""
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install podman runc debootstrap)"
    if os.geteuid() != 0:
        return "the container tests run rootful podman and debootstrap, which need root"
    return None


def require_podman() -> None:
    """Skip with the reason where podman cannot run; fail instead where the CI command demands it."""
    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("POSTROOM_REQUIRE_PODMAN") == "1":
        pytest.fail(f"POSTROOM_REQUIRE_PODMAN=1 but {reason}")
    pytest.skip(reason)


def podman(
    *args: str, timeout: float = COMMAND_TIMEOUT, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `podman ARGS` with the suite's settings; raise PodmanError with its output when it fails."""
    return run_command(["podman", *args], timeout=timeout, check=check)


def run_command(
    argv: list[str],
    *,
    timeout: float = COMMAND_TIMEOUT,
    check: bool = True,
    cwd: Path = ROOT,
    extra_env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` with the suite's podman settings (plus `extra_env`); raise PodmanError when it fails."""
    env = {**podman_env(), **(extra_env or {})}
    done = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise PodmanError(
            f"{' '.join(argv)} exited {done.returncode}\n--- stdout\n{done.stdout[-4000:]}"
            f"\n--- stderr\n{done.stderr[-4000:]}"
        )
    return done


def ensure_base_image() -> str:
    """The local Debian base image's tag, building it on first use (about a minute, then cached)."""
    done = run_command(["bash", str(BASE_IMAGE_SCRIPT)], timeout=BUILD_TIMEOUT)
    return done.stdout.strip().splitlines()[-1]


def build_test_options(base_image: str) -> list[str]:
    """What a build here adds to the documented `podman build`: the local base, PyPI through the host."""
    options = ["--build-arg", f"BASE={base_image}", "--network", "host"]
    if HOST_CA_BUNDLE.is_file():
        options += ["--secret", f"id=pip-ca,src={HOST_CA_BUNDLE}"]
    return options


def remove_container(name: str) -> None:
    podman("rm", "--force", "--volumes", "--time", "0", "--ignore", name, check=False)


def remove_volume(name: str) -> None:
    podman("volume", "rm", "--force", name, check=False)


README = ROOT / "README.md"
README_MARKER = "<!-- podman-commands:"


def readme_podman_commands() -> dict[str, list[str]]:
    """The README's container commands, keyed by podman subcommand ("build", "run", "healthcheck", "stop").

    The tests run these very lines (adapted by `adapt`), so the README cannot drift from what works.
    """
    text = README.read_text(encoding="utf-8")
    start = text.index(README_MARKER)
    block = text[
        text.index("```sh\n", start) + len("```sh\n") : text.index("```", text.index("```sh\n", start) + 5)
    ]
    commands: dict[str, list[str]] = {}
    for line in block.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            if argv[0] != "podman" or len(argv) < 2:
                raise AssertionError(f"README container block: not a podman command: {line!r}")
            commands[argv[1]] = argv
    return commands


def adapt(argv: list[str], replace: dict[str, str], *, ports: dict[str, int] | None = None) -> list[str]:
    """`argv` with whole arguments swapped per `replace`, and `-p HOST:CONTAINER` published on loopback
    at the port `ports` gives for CONTAINER (the suite's own free ports, never the host's 25).

    A volume source is swapped by its name: `-v SRC:DEST` becomes `-v replace[SRC]:DEST`.
    """
    ports = ports or {}
    adapted: list[str] = []
    previous = ""
    for arg in argv:
        if previous in {"-p", "--publish"}:
            container_port = arg.rsplit(":", 1)[-1]
            arg = f"127.0.0.1:{ports[container_port]}:{container_port}"
        elif previous in {"-v", "--volume"}:
            source, colon, rest = arg.partition(":")  # an anonymous volume has no source
            arg = f"{replace.get(source, source)}{colon}{rest}" if colon else arg
        else:
            arg = replace.get(arg, arg)
        adapted.append(arg)
        previous = argv[len(adapted) - 1]
    return adapted
