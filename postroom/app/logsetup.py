"""Logging for `postroom serve`: JSON lines by default, secrets redacted (see postroom/core/logs.py)."""

from __future__ import annotations

import logging

from postroom.app.config import Config
from postroom.core.logs import setup_logging


def configure_logging(config: Config) -> None:
    secrets = [s for s in (config.webhook.secret, config.filters.rspamd.password) if s]
    setup_logging(config.logging, secrets=secrets)
    # Process-wide: every LogRecord stops looking up its thread (id and name), process id and multiprocessing
    # process name. No Postroom line carries them (postroom/core/logs.py RESERVED keeps LogRecord attributes
    # out), so this only saves work (bench/micro/logcost.py). `logging._srcfile` stays: setting it to None
    # would also skip the caller lookup, but that is where `stack_info=True` gets the "stack" field.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
