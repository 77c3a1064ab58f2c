"""A real Rspamd (normal worker + controller) on 127.0.0.1 high ports, configured from fixtures/rspamd.

Facts this module works around (issue 3):
- Rspamd refuses to run workers as root: as root we pass `-u _rspamd -g _rspamd` and hand it its dirs.
  Those dirs live in a fresh /tmp dir, because pytest's own tmp tree is 0700 root and _rspamd can't enter it.
- A cold start compiles the regex cache (10-15 s); it is kept in RSPAMD_CACHE_DIR between runs.
- Rspamd must never ask the system resolver: it gets the test DNS server (`dns_server` fixture) when that
  fixture exists, else a closed loopback port so lookups fail fast and locally.

Fixtures:
- `rspamd_server` (session): one daemon for the whole run.
- `rspamd_killable` (function): a private daemon a test may `kill()` during traffic and `start()` again.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.daemon import (
    FIXTURES,
    DaemonProcess,
    ManagedServer,
    find_binary,
    free_port,
    running_in_tempdir,
)

RSPAMD_FIXTURES = FIXTURES / "rspamd"
RSPAMD_CACHE_DIR = Path("/var/tmp/postroom-test-rspamd")
RSPAMD_USER = "_rspamd"
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
# Rspamd's other test patterns (options.enable_test_patterns in fixtures/rspamd/rspamd.conf).
GTUBE_ADD_HEADER = b"YJS" + GTUBE[3:]
GTUBE_REWRITE_SUBJECT = b"ZJS" + GTUBE[3:]
# fixtures/rspamd/rspamd.local.lua forces the action named in this header (e.g. "greylist").
FORCE_ACTION_HEADER = "X-Postroom-Test-Action"


class RspamdServer(ManagedServer):
    def __init__(self, workdir: Path, nameserver: str) -> None:
        self.host = "127.0.0.1"
        self.port = free_port()
        self.controller_port = free_port()
        self.url = f"http://{self.host}:{self.port}"
        self.controller_url = f"http://{self.host}:{self.controller_port}"
        self.nameserver = nameserver
        dirs = {name: workdir / name for name in ("run", "db", "log")}
        for path in dirs.values():
            path.mkdir()
        cache_dir = _cache_dir()
        argv = [find_binary("rspamd"), "--no-fork", "-c", str(RSPAMD_FIXTURES / "rspamd.conf")]
        if os.geteuid() == 0:
            _give_to_worker_user([workdir, *dirs.values(), cache_dir])
            argv += ["-u", RSPAMD_USER, "-g", RSPAMD_USER]
        variables = {
            "NORMAL_BIND": f"{self.host}:{self.port}",
            "CONTROLLER_BIND": f"{self.host}:{self.controller_port}",
            "NAMESERVER": nameserver,
            "RUNDIR": dirs["run"],
            "DBDIR": dirs["db"],
            "LOGDIR": dirs["log"],
            "HS_CACHE_DIR": cache_dir,
            "LOCAL_CONFDIR": RSPAMD_FIXTURES,
        }
        for name, value in variables.items():
            argv += ["--var", f"{name}={value}"]
        log_file = dirs["log"] / "rspamd.log"
        # A cold start compiles the URL and regex databases before the workers listen.
        self.process = DaemonProcess("rspamd", argv, ready=self.ping, log_file=log_file, start_timeout=90)

    def ping(self) -> bool:
        return _http_ping(self.host, self.port) and _http_ping(self.host, self.controller_port)


def _http_ping(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=1.0)
    try:
        conn.request("GET", "/ping")
        response = conn.getresponse()
        return response.status == 200 and response.read().strip() == b"pong"
    except OSError:
        return False
    finally:
        conn.close()


def _cache_dir() -> Path:
    """The persistent regex cache, or a throw-away one if another user owns the shared path."""
    try:
        RSPAMD_CACHE_DIR.mkdir(parents=True, exist_ok=True)
        if os.access(RSPAMD_CACHE_DIR, os.W_OK):
            return RSPAMD_CACHE_DIR
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="postroom-rspamd-cache-"))


def _give_to_worker_user(paths: list[Path]) -> None:
    try:
        pwd.getpwnam(RSPAMD_USER)
    except KeyError:
        pytest.fail(f"user {RSPAMD_USER} missing: install rspamd with tests/install-system-deps.sh")
    for path in paths:
        shutil.chown(path, RSPAMD_USER, RSPAMD_USER)


def _nameserver(request: pytest.FixtureRequest) -> str:
    """The test DNS server when its fixture is registered, else a closed local port (fast, local failure)."""
    try:
        dns_server = request.getfixturevalue("dns_server")
    except pytest.FixtureLookupError:
        return f"127.0.0.1:{free_port()}"
    return str(dns_server.nameserver)


def running_rspamd(nameserver: str) -> contextlib.AbstractContextManager[RspamdServer]:
    """A started Rspamd in its own temp dir (under /tmp, reachable by _rspamd), stopped on exit."""
    return running_in_tempdir(lambda workdir: RspamdServer(workdir, nameserver), "postroom-rspamd-")


@pytest.fixture(scope="session")
def rspamd_server(request: pytest.FixtureRequest) -> Iterator[RspamdServer]:
    with running_rspamd(_nameserver(request)) as server:
        yield server


@pytest.fixture
def rspamd_killable(request: pytest.FixtureRequest) -> Iterator[RspamdServer]:
    with running_rspamd(_nameserver(request)) as server:
        yield server
