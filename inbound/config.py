"""The inbound side's config sections: the SMTP listener, tenant routing, the webhook, delivery and per-tenant
back-pressure. Every key is documented in deploy/postroom.example.toml.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from postroom.core.configload import MIB, ConfigError, parse_hostport, parse_http_url
from postroom.core.smtp_limits import ErrorLimits


@dataclass
class SmtpConfig:
    listen: str = "127.0.0.1:2525"
    hostname: str = "postroom.localdomain"
    max_message_size: int = 10 * MIB
    max_recipients: int = 100
    command_timeout: float = 300.0
    session_timeout: float = 1800.0
    max_sessions: int = 500
    max_sessions_per_ip: int = 20
    tls_cert: str = ""
    tls_key: str = ""
    proxy_protocol: bool = False
    proxy_protocol_timeout: float = 5.0
    # Postfix-style error limits per session: past `soft_error_limit` error replies (4xx/5xx) each further one
    # waits `error_sleep_time` seconds; at `hard_error_limit` the session gets 421 and is closed (and the
    # client earns one refusal toward the throttle's auto-block). NOOP/RSET/VRFY/EXPN/HELP beyond
    # `junk_command_limit` count as errors. A message accepted after DATA clears the count. The submission
    # listener applies the same limits until AUTH succeeds.
    hard_error_limit: int = 20
    soft_error_limit: int = 10
    error_sleep_time: float = 1.0
    junk_command_limit: int = 100
    # Processes that each run the listener (sharing the port with SO_REUSEPORT) and a delivery runner over
    # the one spool, under a supervisor. 1 = a single process, no supervisor.
    workers: int = 1

    def validate(self) -> None:
        parse_hostport(self.listen, "listen")
        if "." not in self.hostname.strip(".") or " " in self.hostname:
            raise ConfigError("hostname", f"must be a fully-qualified domain name, got {self.hostname!r}")
        for name in ("max_message_size", "max_recipients", "max_sessions", "max_sessions_per_ip", "workers"):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be at least 1")
        for name in ("command_timeout", "session_timeout", "proxy_protocol_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("tls_cert", "tls_cert and tls_key must be set together")
        if self.hard_error_limit < 1 or self.junk_command_limit < 1:
            raise ConfigError("hard_error_limit", "error and junk command limits must be at least 1")
        if not 0 <= self.soft_error_limit <= self.hard_error_limit:
            raise ConfigError("soft_error_limit", "must be between 0 and hard_error_limit")
        if self.error_sleep_time < 0:
            raise ConfigError("error_sleep_time", "must not be negative")

    def error_limits(self) -> ErrorLimits:
        return ErrorLimits(
            hard_error_limit=self.hard_error_limit,
            soft_error_limit=self.soft_error_limit,
            error_sleep_time=self.error_sleep_time,
            junk_command_limit=self.junk_command_limit,
        )


@dataclass
class RoutingConfig:
    domains: list[str] = field(default_factory=lambda: ["helpdesk.localhost"])
    tenant_file: str = ""

    def validate(self) -> None:
        if not self.domains:
            raise ConfigError("domains", "at least one mail domain is required")
        for i, domain in enumerate(self.domains):
            if not domain or domain != domain.strip().strip(".") or " " in domain:
                raise ConfigError(f"domains[{i}]", f"invalid domain {domain!r}")
        if self.tenant_file and not Path(self.tenant_file).is_file():
            raise ConfigError("tenant_file", f"no such file: {self.tenant_file}")


@dataclass
class WebhookConfig:
    url: str = "http://127.0.0.1:8025/tickets"
    secret: str = "change-me"
    timeout: float = 10.0
    max_response_bytes: int = 64 * 1024
    concurrency: int = 32
    per_tenant_concurrency: int = 4
    retry_initial: float = 30.0
    retry_max_interval: float = 7200.0
    retry_max_age: float = 86400.0
    retry_jitter: float = 0.2
    max_inline_attachment_bytes: int = 10 * MIB

    def validate(self) -> None:
        parse_http_url(self.url, "url")
        if not self.secret:
            raise ConfigError("secret", "must not be empty")
        for name in ("timeout", "retry_initial", "retry_max_interval", "retry_max_age"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if not 0 <= self.retry_jitter <= 1:
            raise ConfigError("retry_jitter", "must be between 0 and 1")
        if self.concurrency < 1 or self.per_tenant_concurrency < 1:
            raise ConfigError("concurrency", "concurrency limits must be at least 1")


@dataclass
class DeliveryConfig:
    # Worker processes that turn MIME into tickets (CPU work kept off the event loop); 0 = a thread instead.
    normalize_workers: int = 1
    # Messages at least this big go to those processes; smaller ones are parsed in a thread, which costs
    # less than the trip to another process (a small message parses in ~0.1 ms).
    process_pool_min_bytes: int = 131072
    # Seconds one message may take in those processes; beyond, its worker is killed and replaced and the
    # message delivered as the fallback ticket (header fields only, raw kept, parse_error saying why).
    normalize_timeout: float = 30.0
    # How often the runner looks in the spool for work it was not told about (CLI replays, other writers).
    rescan_interval: float = 2.0
    # Seconds SIGTERM waits for deliveries in flight before leaving them to start-up recovery.
    shutdown_grace: float = 20.0

    def validate(self) -> None:
        if self.normalize_workers < 0:
            raise ConfigError("normalize_workers", "must not be negative")
        if self.process_pool_min_bytes < 0:
            raise ConfigError("process_pool_min_bytes", "must not be negative")
        if self.normalize_timeout <= 0:
            raise ConfigError("normalize_timeout", "must be positive")
        if self.rescan_interval <= 0 or self.shutdown_grace < 0:
            raise ConfigError("rescan_interval", "intervals must be positive")


@dataclass
class BackpressureConfig:
    """Per-tenant back-pressure (inbound/delivery/circuit.py)."""

    enabled: bool = True
    failures_to_open: int = 10
    max_queued: int = 1000  # 0: refuse as soon as the circuit is open
    max_age: float = 3600.0  # seconds; 0: refuse as soon as the circuit is open
    open_ttl: float = 3600.0  # an open circuit that no failure re-asserts for this long closes by itself
    redis_refresh: float = 1.0
    redis_key: str = "postroom:circuits"

    def validate(self) -> None:
        if self.failures_to_open < 1:
            raise ConfigError("failures_to_open", "must be at least 1")
        if self.max_queued < 0 or self.max_age < 0:
            raise ConfigError("max_queued", "thresholds must not be negative")
        for name in ("open_ttl", "redis_refresh"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if not self.redis_key:
            raise ConfigError("redis_key", "must not be empty")


class ListenerSettings(Protocol):
    """What the SMTP listener reads of the whole config (postroom/app/config.py)."""

    @property
    def smtp(self) -> SmtpConfig: ...
