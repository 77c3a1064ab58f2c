"""Logging for `postroom serve`: JSON lines by default, secrets redacted (see postroom/core/logs.py)."""

from __future__ import annotations

import logging

from postroom.app.config import Config
from postroom.core.logs import setup_logging, skip_caller_lookup


def configure_logging(config: Config) -> None:
    secrets = [s for s in (config.webhook.secret, config.filters.rspamd.password) if s]
    setup_logging(config.logging, secrets=secrets)
    # Process-wide: every LogRecord stops looking up its thread (id and name), process id and multiprocessing
    # process name. No Postroom line carries them (postroom/core/logs.py RESERVED keeps LogRecord attributes
    # out), so this only saves work (bench/micro/logcost.py). `logging._srcfile` stays: setting it to None
    # would also skip the caller lookup for `stack_info=True`, where the "stack" field comes from; loggers
    # that look their caller up only for that do the rest.
    skip_caller_lookup()
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
