"""Configuration of the filter stages: one `[filters.<name>]` table per filter.

Every filter has `enabled`, `mode` ("enforce" records and acts; "observe" records what it would have done),
`timeout` (seconds for one check) and `fail_open` (on an infrastructure fault, accept and flag the verdict
instead of answering 4xx). Filter-specific keys follow.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal, Protocol

from filters.base import Mode
from postroom.core.config import SpoolConfig
from postroom.core.configload import ConfigError, parse_http_url


@dataclass
class FilterSection:
    enabled: bool = False
    mode: Mode = Mode.ENFORCE
    timeout: float = 5.0
    fail_open: bool = False

    def validate(self) -> None:
        if self.timeout <= 0:
            raise ConfigError("timeout", "must be positive")


@dataclass
class DnsblConfig(FilterSection):
    zones: list[str] = field(default_factory=lambda: ["zen.spamhaus.org"])
    allow: list[str] = field(default_factory=list)  # client IPs/networks never checked, e.g. "10.0.0.0/8"
    health_check_interval: float = 300.0
    cache_size: int = 10_000  # (zone, address) answers kept, each for its DNS TTL

    def validate(self) -> None:
        super().validate()
        for i, entry in enumerate(self.allow):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ConfigError(
                    f"allow[{i}]", f"expected an IP address or network, got {entry!r}"
                ) from None
        if self.health_check_interval <= 0:
            raise ConfigError("health_check_interval", "must be positive")
        if self.cache_size < 1:
            raise ConfigError("cache_size", "must be at least 1")


@dataclass
class SpfConfig(FilterSection):
    timeout: float = 10.0
    reject_softfail: bool = False
    reject_permerror: bool = False  # a broken SPF record is the sender's DNS problem, not proof of forgery
    # Evaluations kept per (client IP, domain, identity), each for its answers' TTL and at most cache_ttl
    # seconds; records with macros are never kept. 0 turns the cache off.
    cache_size: int = 10_000
    cache_ttl: float = 60.0

    def validate(self) -> None:
        super().validate()
        if self.cache_size < 0:
            raise ConfigError("cache_size", "must not be negative")
        if self.cache_ttl <= 0:
            raise ConfigError("cache_ttl", "must be positive")


@dataclass
class FqdnConfig(FilterSection):
    reject_non_fqdn_helo: bool = True
    reject_invalid_helo: bool = True
    reject_non_fqdn_sender: bool = True
    reject_unknown_sender_domain: bool = True


@dataclass
class ClamavConfig(FilterSection):
    address: str = "unix:/var/run/clamav/clamd.ctl"  # or "host:port"
    timeout: float = 30.0
    stream_max_length: int = 25 * 1024 * 1024  # keep equal to clamd's StreamMaxLength
    oversize: Literal["accept", "tempfail", "reject"] = "accept"  # messages above stream_max_length
    chunk_size: int = 64 * 1024

    def validate(self) -> None:
        super().validate()
        if not self.address.startswith("unix:/") and ":" not in self.address:
            raise ConfigError("address", f"expected unix:/path or host:port, got {self.address!r}")
        for name in ("stream_max_length", "chunk_size"):
            if getattr(self, name) < 1:
                raise ConfigError(name, "must be at least 1")


@dataclass
class RspamdConfig(FilterSection):
    url: str = "http://127.0.0.1:11333"
    timeout: float = 15.0
    password: str = ""
    max_connections: int = 32  # pooled HTTP connections to Rspamd's normal worker (or proxy)

    def validate(self) -> None:
        super().validate()
        parse_http_url(self.url, "url")
        if self.max_connections < 1:
            raise ConfigError("max_connections", "must be at least 1")


@dataclass
class ThrottleConfig(FilterSection):
    # Per client IP (like Postfix's anvil): 0 disables a limit.
    ip_concurrency: int = 20
    ip_connections_per_minute: int = 120
    ip_messages_per_minute: int = 120
    ip_recipients_per_minute: int = 600
    sender_messages_per_minute: int = 60
    tenant_messages_per_minute: int = 6000
    # The dynamic block-list: this many refusals within the window blocks the IP for block_duration seconds.
    auto_block_rejects: int = 20  # 0 disables automatic blocking
    auto_block_window: float = 600.0
    block_duration: float = 3600.0  # also the default of `postroom block add --for`
    # In-process backend: the block-list file shared with `postroom block`; "" = <spool>/blocklist.json.
    blocklist_file: str = ""
    # A concurrency slot whose session never reported closing (a crashed node) is freed after this long;
    # keep it at least [smtp] session_timeout.
    slot_lease: float = 1800.0
    # Redis backend ([redis] url set): every key starts with this, so deployments can share one server.
    redis_key_prefix: str = "postroom:throttle:"

    def validate(self) -> None:
        super().validate()
        for name in (
            "ip_concurrency",
            "ip_connections_per_minute",
            "ip_messages_per_minute",
            "ip_recipients_per_minute",
            "sender_messages_per_minute",
            "tenant_messages_per_minute",
            "auto_block_rejects",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(name, "must not be negative (0 disables the limit)")
        for name in ("auto_block_window", "block_duration", "slot_lease"):
            if getattr(self, name) <= 0:
                raise ConfigError(name, "must be positive")


@dataclass
class DkimDmarcConfig(FilterSection):
    """`[filters.dkim]` (a stable name): DKIM verification and the DMARC decision made from it."""

    timeout: float = 10.0
    enforce_dmarc_reject: bool = True


@dataclass
class FiltersConfig:
    dnsbl: DnsblConfig = field(default_factory=DnsblConfig)
    spf: SpfConfig = field(default_factory=SpfConfig)
    fqdn: FqdnConfig = field(default_factory=FqdnConfig)
    clamav: ClamavConfig = field(default_factory=ClamavConfig)
    rspamd: RspamdConfig = field(default_factory=RspamdConfig)
    throttle: ThrottleConfig = field(default_factory=ThrottleConfig)
    dkim: DkimDmarcConfig = field(default_factory=DkimDmarcConfig)


class FilterSettings(Protocol):
    """What the filters read of the whole config (postroom/app/config.py): their sections and the spool."""

    @property
    def filters(self) -> FiltersConfig: ...

    @property
    def spool(self) -> SpoolConfig: ...
