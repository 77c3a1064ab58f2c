"""Configuration of the filter stages: one `[filters.<name>]` table per filter.

Every filter has `enabled`, `mode` ("enforce" records and acts; "observe" records what it would have done),
`timeout` (seconds for one check) and `fail_open` (on an infrastructure fault, accept and flag the verdict
instead of answering 4xx). Filter-specific keys follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from filters.base import Mode
from inbound.configload import ConfigError


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


@dataclass
class SpfConfig(FilterSection):
    timeout: float = 10.0
    reject_softfail: bool = False


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


@dataclass
class RspamdConfig(FilterSection):
    url: str = "http://127.0.0.1:11333"
    timeout: float = 15.0
    password: str = ""


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
    auto_block_rejects: int = 20
    auto_block_window: float = 600.0
    block_duration: float = 3600.0


@dataclass
class DkimVerifyConfig(FilterSection):
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
    dkim: DkimVerifyConfig = field(default_factory=DkimVerifyConfig)
