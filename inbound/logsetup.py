"""Logging for `postroom serve`: structured JSON lines by default (see inbound/logs.py)."""

from __future__ import annotations

import logging
import sys

from inbound.config import Config


def configure_logging(config: Config) -> None:
    try:
        from inbound.logs import setup_logging
    except ImportError:  # pragma: no cover - until the JSON formatter lands
        logging.basicConfig(level=config.logging.level.upper(), stream=sys.stderr)
        return
    secrets = [s for s in (config.webhook.secret,) if s]
    setup_logging(config.logging, secrets=secrets)
