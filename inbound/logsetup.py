"""Logging for `postroom serve`: structured JSON lines by default, secrets redacted (see inbound/logs.py)."""

from __future__ import annotations

from inbound.config import Config
from inbound.logs import setup_logging


def configure_logging(config: Config) -> None:
    secrets = [s for s in (config.webhook.secret, config.filters.rspamd.password) if s]
    setup_logging(config.logging, secrets=secrets)
