"""Postroom's configuration: one TOML file, every key documented in deploy/postroom.example.toml.

Every section has embedded defaults, so `postroom serve` runs with no file at all (local spool, in-process
counters). Loading validates everything up front and names the bad key.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from filters.config import FiltersConfig
from inbound.config import BackpressureConfig, DeliveryConfig, RoutingConfig, SmtpConfig, WebhookConfig
from outbound.config import DkimConfig, OutboundConfig, SubmissionConfig
from postroom.core.config import DnsConfig, LoggingConfig, MetricsConfig, RedisConfig, SpoolConfig
from postroom.core.configload import ConfigError, load_dataclass


@dataclass
class Config:
    smtp: SmtpConfig = field(default_factory=SmtpConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    spool: SpoolConfig = field(default_factory=SpoolConfig)
    webhook: WebhookConfig = field(default_factory=WebhookConfig)
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    dns: DnsConfig = field(default_factory=DnsConfig)
    redis: RedisConfig = field(default_factory=RedisConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    filters: FiltersConfig = field(default_factory=FiltersConfig)
    backpressure: BackpressureConfig = field(default_factory=BackpressureConfig)
    submission: SubmissionConfig = field(default_factory=SubmissionConfig)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)
    dkim: DkimConfig = field(default_factory=DkimConfig)


def signing_secrets(config: Config) -> list[tuple[str, str]]:
    """The HMAC keys `serve` signs with, by dotted key (postroom/core/secret_policy.py checks them)."""
    keys = [("webhook.secret", config.webhook.secret)]
    if config.outbound.bounce_domain:  # VERP return paths carry a MAC of their own key
        keys.append(("outbound.verp_secret", config.outbound.verp_secret))
    return keys


def load_config(path: str | Path | None) -> Config:
    """Load and validate a config file; None gives the embedded defaults."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("", f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: not valid TOML: {exc}") from None
    return config_from_mapping(data)


def config_from_mapping(data: dict[str, object]) -> Config:
    return load_dataclass(Config, data)
