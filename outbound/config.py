"""Configuration of the outbound relay: `[submission]`, `[outbound]` and `[dkim]`.

Each field's comment is its documentation (copied into deploy/postroom.example.toml and docs/outbound.md).
Durations are seconds. Validation runs at load time and names the offending key.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

from outbound.passwords import PasswordHashError, parse_password_hash
from postroom.core.config import SpoolConfig
from postroom.core.configload import ConfigError, parse_hostport
from postroom.core.smtp_limits import ErrorLimits

MIB = 1024 * 1024
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
DAY = 86400.0
MIN_VERP_SECRET = 32  # bytes, as every signing key `serve` checks (postroom/core/secret_policy.py)

# Header fields signed by default: the RFC 6376 §5.4.1 recommendations plus the threading and loop-breaking
# headers a helpdesk notification relies on. Listing an absent field is fine: it stops it being added later.
DEFAULT_SIGNED_HEADERS = [
    "From",
    "Reply-To",
    "Subject",
    "Date",
    "To",
    "Cc",
    "Message-ID",
    "In-Reply-To",
    "References",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
    "Auto-Submitted",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
]
# RFC 6376 §5.4: fields that relays legitimately add or change must not be signed.
UNSIGNABLE_HEADERS = frozenset({"return-path", "received", "comments", "keywords", "bcc", "resent-bcc"})


def _check_domain(value: str, key: str) -> None:
    if not value or value != value.strip().strip(".") or " " in value or "." not in value or "@" in value:
        raise ConfigError(key, f"must be a domain name like 'example.com', got {value!r}")
    if value != value.lower():
        raise ConfigError(key, f"must be lowercase, got {value!r}")


def _check_listen(value: str, key: str) -> None:
    # Imported here: inbound.config imports this module while it is itself being imported.

    parse_hostport(value, key)


@dataclass
class SubmissionUser:
    """One `[[submission.users]]` entry: an account the helpdesk application authenticates with."""

    # Login name given in AUTH PLAIN / LOGIN (compared exactly).
    name: str
    # `postroom hash-password` output ("scrypt$n$r$p$salt$hash"); the plain password is never stored.
    password_hash: str
    # Domains this user may send as, in both MAIL FROM and the From: header (exact, lowercase).
    sender_domains: list[str]

    def validate(self) -> None:
        if not self.name or any(ch.isspace() or not ch.isprintable() for ch in self.name):
            raise ConfigError("name", f"must be non-empty without spaces, got {self.name!r}")
        try:
            parse_password_hash(self.password_hash)
        except PasswordHashError as exc:
            raise ConfigError("password_hash", f"{exc} (make one with `postroom hash-password`)") from None
        if not self.sender_domains:
            raise ConfigError("sender_domains", "at least one domain is required")
        for i, domain in enumerate(self.sender_domains):
            _check_domain(domain, f"sender_domains[{i}]")


@dataclass
class SubmissionConfig:
    """`[submission]`: the authenticated listener the helpdesk hands its notifications to."""

    # Run the submission listener.
    enabled: bool = False
    # host:port to listen on. Keep it on a private address; `allowed_networks` is a second fence.
    listen: str = "127.0.0.1:587"
    # Name in the greeting, EHLO reply and added Message-IDs; "" uses `[smtp] hostname`.
    hostname: str = ""
    # PEM certificate chain and private key for STARTTLS; required when enabled (AUTH is offered only
    # after STARTTLS, so without TLS nobody could submit).
    tls_cert: str = ""
    tls_key: str = ""
    # Client networks allowed to connect; any other client gets 554 5.7.1 at connect.
    allowed_networks: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1/128"])
    # Largest message accepted, in bytes (552 5.3.4 above it).
    max_message_size: int = 25 * MIB
    # Most recipients in one transaction (452 4.5.3 beyond it).
    max_recipients: int = 1000
    # Failed AUTH attempts, per client IP and per (client IP, user), after which further attempts from that
    # IP (for that user) are refused with 454 4.7.0 for `lockout_seconds` — even with the right password.
    # Another host's failures never lock out a client. Failures older than `lockout_seconds` are forgotten;
    # a success clears its IP's counts.
    auth_failures_before_lockout: int = 5
    lockout_seconds: float = 900.0
    # Failed AUTH attempts for one user name from all hosts together (guessing spread over many hosts)
    # after which that user is locked out for `lockout_seconds` — except for clients that have logged in as
    # that user in the past 7 days. A success does not clear this count.
    user_auth_failures_before_lockout: int = 100
    # Add "Auto-Submitted: auto-generated" (RFC 3834) when a message has no Auto-Submitted header, so
    # auto-responders and Postroom's own inbound side do not answer notifications (mail loops).
    add_auto_submitted: bool = True
    # The accounts allowed to submit.
    users: list[SubmissionUser] = field(default_factory=list)

    def validate(self) -> None:
        _check_listen(self.listen, "listen")
        if self.hostname and ("." not in self.hostname.strip(".") or " " in self.hostname):
            raise ConfigError("hostname", f"must be a fully-qualified domain name, got {self.hostname!r}")
        for i, network in enumerate(self.allowed_networks):
            try:
                ipaddress.ip_network(network, strict=True)
            except ValueError as exc:
                raise ConfigError(f"allowed_networks[{i}]", str(exc)) from None
        for name in (
            "max_message_size",
            "max_recipients",
            "auth_failures_before_lockout",
            "user_auth_failures_before_lockout",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be at least 1")
        if self.lockout_seconds <= 0:
            raise ConfigError("lockout_seconds", "must be positive")
        seen: set[str] = set()
        for i, user in enumerate(self.users):
            if user.name in seen:
                raise ConfigError(f"users[{i}].name", f"duplicate user {user.name!r}")
            seen.add(user.name)
        if self.enabled:
            if not self.tls_cert or not self.tls_key:
                raise ConfigError("tls_cert", "tls_cert and tls_key are required when submission is enabled")
            for name in ("tls_cert", "tls_key"):
                if not Path(getattr(self, name)).is_file():
                    raise ConfigError(name, f"no such file: {getattr(self, name)}")
            if not self.users:
                raise ConfigError("users", "at least one [[submission.users]] entry is required when enabled")


@dataclass
class DestinationConfig:
    """`[outbound.destinations."<domain>"]`: overrides for one destination domain (Postfix's transport_maps).

    Unset limits inherit `destination_concurrency` / `destination_rate_per_minute`.
    """

    # Most simultaneous connections to this domain's MXs.
    concurrency: int | None = None
    # Most messages started per minute to this domain; 0 = unlimited.
    rate_per_minute: int | None = None
    # Refuse to deliver without STARTTLS (a 4xx-like deferral when the MX does not offer it).
    require_tls: bool = False

    def validate(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigError("concurrency", "must be at least 1")
        if self.rate_per_minute is not None and self.rate_per_minute < 0:
            raise ConfigError("rate_per_minute", "must not be negative (0 = unlimited)")


@dataclass
class OutboundConfig:
    """`[outbound]`: delivery of submitted messages to the recipients' MXs."""

    # Run the delivery runner.
    enabled: bool = False
    # Directory of the outbound spool; "" means "<[spool] path>/outbound". The suppression list file (when
    # Redis is not configured) lives here too.
    spool_path: str = ""
    # Send everything through this host ("host" or "host:port") instead of looking up MX records.
    smarthost: str = ""
    # TCP port of remote MXs; only tests change it.
    smtp_port: int = 25
    # Global cap on simultaneous outgoing connections.
    concurrency: int = 100
    # Default cap on simultaneous connections per destination domain.
    destination_concurrency: int = 20
    # Default messages started per minute per destination domain; 0 = unlimited.
    destination_rate_per_minute: int = 0
    # Per-domain overrides, keyed by lowercase domain.
    destinations: dict[str, DestinationConfig] = field(default_factory=dict)
    # Retry schedule after a 4xx or a connection failure: the first retry after `retry_initial`, doubling
    # up to `retry_max_interval`; a message older than `retry_max_age` bounces.
    retry_initial: float = 300.0
    retry_max_interval: float = 14400.0
    retry_max_age: float = 5 * DAY
    # Timeouts for one delivery attempt: TCP connect, and each SMTP command/reply.
    connect_timeout: float = 30.0
    command_timeout: float = 120.0
    # Messages sent over one connection before it is closed and a fresh one opened.
    max_messages_per_connection: int = 100
    # How long a hard bounce keeps its recipient on the suppression list; 0 = until removed by hand.
    suppression_ttl: float = 30 * DAY
    # Domain of VERP envelope senders (bounce+<token>@<bounce_domain>); must route to Postroom's inbound MX.
    # Required when `verp` is on and the relay is enabled.
    bounce_domain: str = ""
    # Use VERP envelope senders, so a returning bounce names its message and recipient.
    verp: bool = True
    # Key of the MAC in VERP addresses (at least 32 characters); required when `bounce_domain` is set.
    # Its own key: rotating the webhook secret must not invalidate bounce addresses still out there.
    verp_secret: str = ""
    # Name given in EHLO to remote MXs; "" uses `[smtp] hostname`.
    helo_name: str = ""

    def validate(self) -> None:
        if self.smarthost:
            parse_hostport(self.smarthost, "smarthost", default_port=self.smtp_port)
        if not 0 < self.smtp_port < 65536:
            raise ConfigError("smtp_port", "must be a TCP port (1-65535)")
        for name in ("concurrency", "destination_concurrency", "max_messages_per_connection"):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be at least 1")
        if self.destination_rate_per_minute < 0:
            raise ConfigError("destination_rate_per_minute", "must not be negative (0 = unlimited)")
        for domain, override in self.destinations.items():
            _check_domain(domain, f"destinations.{domain}")
            if override.concurrency is not None and override.concurrency > self.concurrency:
                raise ConfigError(
                    f"destinations.{domain}.concurrency", "must not exceed the global concurrency"
                )
        for name in (
            "retry_initial",
            "retry_max_interval",
            "retry_max_age",
            "connect_timeout",
            "command_timeout",
        ):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")
        if self.retry_max_interval < self.retry_initial:
            raise ConfigError("retry_max_interval", "must be at least retry_initial")
        if self.suppression_ttl < 0:
            raise ConfigError("suppression_ttl", "must not be negative (0 = until removed)")
        if self.bounce_domain:
            _check_domain(self.bounce_domain, "bounce_domain")
        elif self.enabled and self.verp:
            raise ConfigError("bounce_domain", "required when verp is true (or set verp = false)")
        if self.bounce_domain and len(self.verp_secret) < MIN_VERP_SECRET:
            problem = "required when bounce_domain is set" if not self.verp_secret else "too short"
            raise ConfigError("verp_secret", f"{problem}: at least {MIN_VERP_SECRET} random characters")
        if self.helo_name and ("." not in self.helo_name.strip(".") or " " in self.helo_name):
            raise ConfigError("helo_name", f"must be a fully-qualified domain name, got {self.helo_name!r}")

    def spool_dir(self, spool_root: str) -> Path:
        """The outbound spool directory, given `[spool] path`."""
        return Path(self.spool_path) if self.spool_path else Path(spool_root) / "outbound"

    def limits_for(self, domain: str) -> DestinationConfig:
        """The effective limits for a destination domain, with defaults filled in."""
        override = self.destinations.get(domain.lower().rstrip("."), DestinationConfig())
        return replace(
            override,
            concurrency=override.concurrency or self.destination_concurrency,
            rate_per_minute=(
                override.rate_per_minute
                if override.rate_per_minute is not None
                else self.destination_rate_per_minute
            ),
        )


@dataclass
class DkimConfig:
    """`[dkim]`: signing of submitted messages (RFC 6376, rsa-sha256, relaxed/relaxed)."""

    # Selector published in DNS: the public key lives at <selector>._domainkey.<domain>.
    selector: str = "postroom"
    # Lowercase domain → path of its PEM RSA private key (`postroom dkim-keygen` makes one). A message is
    # signed with the key of its From: domain, else of the nearest parent domain listed; with none it goes
    # out unsigned (and a warning is logged).
    keys: dict[str, str] = field(default_factory=dict)
    # Header fields to sign; must include From.
    headers: list[str] = field(default_factory=lambda: list(DEFAULT_SIGNED_HEADERS))

    def validate(self) -> None:
        if not all(_DNS_LABEL.fullmatch(label) for label in self.selector.split(".")):
            raise ConfigError("selector", f"must be a DNS label like 'postroom', got {self.selector!r}")
        for domain, path in self.keys.items():
            _check_domain(domain, f"keys.{domain}")
            if not Path(path).is_file():
                raise ConfigError(f"keys.{domain}", f"no such key file: {path}")
        lowered = [h.lower() for h in self.headers]
        if "from" not in lowered:
            raise ConfigError("headers", "must include From (RFC 6376 §5.4)")
        for i, name in enumerate(lowered):
            if name in UNSIGNABLE_HEADERS or name == "dkim-signature":
                raise ConfigError(f"headers[{i}]", f"{self.headers[i]} must not be signed (RFC 6376 §5.4)")
            if not name or any(ch.isspace() or ch == ":" for ch in name):
                raise ConfigError(f"headers[{i}]", f"not a header field name: {self.headers[i]!r}")


class _SmtpSection(Protocol):
    @property
    def hostname(self) -> str: ...

    def error_limits(self) -> ErrorLimits: ...


class RelaySettings(Protocol):
    """What the relay reads of the whole config (postroom/app/config.py): its own sections, the spool, the
    MX's host name (the default HELO name) and its error limits (the submission's too, until AUTH)."""

    @property
    def outbound(self) -> OutboundConfig: ...

    @property
    def submission(self) -> SubmissionConfig: ...

    @property
    def dkim(self) -> DkimConfig: ...

    @property
    def spool(self) -> SpoolConfig: ...

    @property
    def smtp(self) -> _SmtpSection: ...
