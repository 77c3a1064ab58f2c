"""The real daemons behind the filter profiles, started with the test suite's own helpers (tests/servers).

NSD serves fixtures/dns/zones. The benchmark's messages use names from them (bench/messages.py): sender
domain pass.spf.test, whose SPF record passes 127.0.0.0/8, HELO mail.hosts.test, and DNSBL zone dnsbl.test,
where the benchmark's 127.0.10.x clients are not listed. Rspamd and clamd run from fixtures/rspamd and
fixtures/clamav. Reusing tests/servers keeps one copy of each daemon's configuration.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from bench.postroom_config import Services


class ServiceError(RuntimeError):
    pass


@contextlib.contextmanager
def _as_runtime_error(name: str) -> Iterator[None]:
    """tests/servers reports failures with pytest.fail (a BaseException): turn them into plain errors."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:
        raise ServiceError(f"{name} did not start: {exc}") from None


@contextlib.contextmanager
def profile_services(profiles: list[str], workdir: Path) -> Iterator[Services]:
    """Start what the profiles need (NSD for cheap and all; Rspamd and clamd for all); stop them after."""
    with contextlib.ExitStack() as stack:
        services = Services()
        if {"cheap", "all"} & set(profiles):
            with _as_runtime_error("nsd"):
                from tests.servers.dns import run_nsd

                dns = stack.enter_context(run_nsd(workdir / "nsd"))
            services.nameserver = dns.nameserver
        if "all" in profiles:
            with _as_runtime_error("rspamd"):
                from tests.servers.rspamd import running_rspamd

                rspamd = stack.enter_context(running_rspamd(services.nameserver))
            services.rspamd_url = rspamd.url
            with _as_runtime_error("clamd"):
                from tests.servers.clamd import STREAM_MAX_LENGTH, running_clamd

                clamd = stack.enter_context(running_clamd())
            services.clamd_address = clamd.tcp_address
            services.clamd_stream_max_length = STREAM_MAX_LENGTH
            services.daemon_pids = [d.process.proc.pid for d in (rspamd, clamd) if d.process.proc is not None]
        yield services
