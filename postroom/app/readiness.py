"""Readiness checks for /readyz: each is `async () -> (name, ok, detail)` and never raises on a fault.

The listener adds one check per configured dependency (clamd, rspamd, Redis, the webhook); the checks here
are the generic ones. `OpsServer` runs them concurrently, each under a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from postroom.app.config import Config
from postroom.core.configload import parse_hostport
from postroom.core.spool import TMP, Spool

CheckResult = tuple[str, bool, str]
ReadinessCheck = Callable[[], Awaitable[CheckResult]]


def spool_check(spool: Spool, name: str = "spool") -> ReadinessCheck:
    """Ready when a file can be written and fsynced in the spool and free space is above the floor.

    A node that would answer 452 to every message is not ready: the balancer should send mail elsewhere.
    """

    def probe() -> CheckResult:
        path = spool.root / TMP / f".readyz-{os.getpid()}-{secrets.token_hex(4)}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"ok")
                os.fsync(fd)
            finally:
                os.close(fd)
                with contextlib.suppress(OSError):
                    path.unlink()
            if not spool.has_room():
                return name, False, f"free space below {spool.min_free_bytes} bytes"
        except OSError as exc:
            return name, False, f"not writable: {exc.strerror or exc}"
        return name, True, "writable"

    async def check() -> CheckResult:
        return await asyncio.to_thread(probe)

    return check


def tcp_check(name: str, host: str, port: int, timeout: float = 2.0) -> ReadinessCheck:
    """Ready when a TCP connection to host:port opens (for daemons without a cheaper health probe)."""

    async def check() -> CheckResult:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except (OSError, TimeoutError) as exc:
            return name, False, f"{host}:{port} unreachable: {exc or type(exc).__name__}"
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return name, True, f"{host}:{port} reachable"

    return check


def dependency_checks(config: Config) -> list[ReadinessCheck]:
    """/readyz: the daemons this node's enabled filters and webhook need must accept connections."""
    endpoints: list[tuple[str, str]] = []
    filters = config.filters
    if filters.clamav.enabled and not filters.clamav.address.startswith("unix:"):
        endpoints.append(("clamd", filters.clamav.address))
    if filters.rspamd.enabled:
        endpoints.append(("rspamd", _netloc(filters.rspamd.url)))
    if config.redis.url.startswith("redis"):
        endpoints.append(("redis", _netloc(config.redis.url, default_port=6379)))
    endpoints.append(("webhook", _netloc(config.webhook.url)))
    checks = []
    for name, address in endpoints:
        host, port = parse_hostport(address, name, default_port=80)
        checks.append(tcp_check(name, host, port))
    return checks


def _netloc(url: str, default_port: int | None = None) -> str:
    parts = urlsplit(url)
    port = parts.port or default_port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"
