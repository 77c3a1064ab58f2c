"""Config sections every part of Postroom shares: the spool, DNS, Redis, metrics and logging.

Each side's own sections live beside its code (inbound/config.py, filters/config.py, outbound/config.py);
postroom/app/config.py puts them together into the one TOML file.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from postroom.core.configload import MIB, ConfigError, parse_hostport


@dataclass
class SpoolConfig:
    path: str = "./var/spool"
    min_free_bytes: int = 100 * MIB
    keep_delivered: bool = False
    corrupt_after_crashes: int = 3

    def validate(self) -> None:
        if self.min_free_bytes < 0:
            raise ConfigError("min_free_bytes", "must not be negative")
        if self.corrupt_after_crashes < 1:
            raise ConfigError("corrupt_after_crashes", "must be at least 1")


@dataclass
class DnsConfig:
    nameservers: list[str] = field(default_factory=list)
    timeout: float = 3.0
    # Answers kept (by their TTL, negative ones by the SOA minimum) and shared by every lookup; 0 = none.
    cache_size: int = 50000

    def validate(self) -> None:
        for i, server in enumerate(self.nameservers):
            host, _ = parse_hostport(server, f"nameservers[{i}]", default_port=53)
            try:
                ipaddress.ip_address(host)
            except ValueError:
                raise ConfigError(f"nameservers[{i}]", f"must be an IP address, got {host!r}") from None
        if self.timeout <= 0:
            raise ConfigError("timeout", "must be positive")
        if self.cache_size < 0:
            raise ConfigError("cache_size", "must not be negative")


@dataclass
class RedisConfig:
    url: str = ""

    def validate(self) -> None:
        if self.url and not self.url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("url", f"must be a redis://, rediss:// or unix:// URL, got {self.url!r}")


@dataclass
class MetricsConfig:
    listen: str = ""

    def validate(self) -> None:
        if self.listen:
            parse_hostport(self.listen, "listen")


@dataclass
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"
