"""Structured logs: one JSON object per line, carrying every `extra` field, with secrets redacted.

Each event names the message it concerns (`queue_id`, `session`, `tenant`, `stage`, `verdict`, ...), so
`grep <queue id>` over the log shows a message's whole life. "text" format is the same data for humans.

Redaction happens in the formatter, so no call site can forget it: values under keys that look secret
(password, token, authorization, ...) become "***", every configured secret (the webhook secret, the Rspamd
password) is masked wherever it appears in a value or the message, and so is the password of a URL.
"""

from __future__ import annotations

import logging
import math
import re
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from postroom.core.config import LoggingConfig

MASK = "***"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# Attributes every LogRecord has; anything else on a record came from `extra`.
RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
CORE = ("ts", "level", "logger", "msg")
SECRET_KEY = re.compile(r"secret|passw|authorization|token|api[_-]?key|cookie|credential", re.IGNORECASE)
URL_PASSWORD = re.compile(r"(?P<prefix>\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@", re.IGNORECASE)

# Libraries whose INFO lines repeat what Postroom's own events already say (and may carry URLs).
QUIET_LOGGERS = ("mail.log", "httpx", "httpcore")


# SECRET_KEY's verdict per key. Keys are the call sites' field names (and nested dict keys), a small set;
# past the bound, keys are still checked, just not remembered.
_secret_keys: dict[str, bool] = {}
SECRET_KEY_CACHE_SIZE = 4096


def is_secret_key(key: str) -> bool:
    secret = _secret_keys.get(key)
    if secret is None:
        secret = SECRET_KEY.search(key) is not None
        if len(_secret_keys) < SECRET_KEY_CACHE_SIZE:
            _secret_keys[key] = secret
    return secret


class Redactor:
    def __init__(self, secrets: Sequence[str] = ()) -> None:
        # Longest first, so a secret that contains another one is masked whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def text(self, value: str) -> str:
        if type(value) is not str:  # a str subclass (a str Enum...): its plain text, as replace/sub give
            value = str.__str__(value)
        for secret in self.secrets:
            if secret in value:
                value = value.replace(secret, MASK)
        if "://" in value:  # URL_PASSWORD cannot match without it; most values have none
            value = URL_PASSWORD.sub(rf"\g<prefix>{MASK}@", value)
        return value

    def value(self, key: str, value: Any) -> Any:
        if is_secret_key(key) and value not in (None, ""):
            return MASK
        kind = type(value)  # exact types first: the common cases, without the isinstance chain
        if kind is str:
            return self.text(value)
        if kind is int or kind is float or kind is bool or value is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {str(k): self.value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value("", v) for v in value]
        if isinstance(value, bytes):
            return self.text(value.decode("utf-8", "replace"))
        return self.text(str(value))


# (second, "YYYY-MM-DDTHH:MM:SS") of the last record: records come many per second.
_ts_prefix: tuple[int, str] = (0, "1970-01-01T00:00:00")


def utc_timestamp(created: float) -> str:
    """`created` as `2024-05-01T12:00:00.123Z`: exactly `datetime.fromtimestamp(created, UTC)` in ISO form
    with milliseconds (microseconds rounded half-even, then truncated), the per-second part cached."""
    global _ts_prefix
    frac, whole = math.modf(created)
    second, micros = int(whole), round(frac * 1e6)
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    elif micros < 0:
        second, micros = second - 1, micros + 1_000_000
    cached, prefix = _ts_prefix
    if second != cached:
        prefix = datetime.fromtimestamp(second, UTC).replace(tzinfo=None).isoformat(timespec="seconds")
        _ts_prefix = (second, prefix)
    return f"{prefix}.{micros // 1000:03d}Z"


# Which of a record's attributes are extras, and the name each is written under, by the record's attribute
# names in order: call sites log a few fixed shapes, so this is worked out once per shape, not per record.
_extras: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}
EXTRAS_CACHE_SIZE = 1024


def extra_names(attributes: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """(attribute, output name) of each extra: not a LogRecord attribute, not private; `<key>_` on a clash."""
    names = _extras.get(attributes)
    if names is None:
        names = tuple(
            (key, f"{key}_" if key in CORE else key)
            for key in attributes
            if key not in RESERVED and not key.startswith("_")
        )
        if len(_extras) < EXTRAS_CACHE_SIZE:
            _extras[attributes] = names
    return names


def record_fields(record: logging.LogRecord, redactor: Redactor) -> dict[str, Any]:
    """The event as a flat dict: core fields, then every extra (renamed `<key>_` if it clashes)."""
    entry: dict[str, Any] = {
        "ts": utc_timestamp(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "msg": redactor.text(record.getMessage()),
    }
    attributes = record.__dict__
    value = redactor.value
    for key, name in extra_names(tuple(attributes)):
        entry[name] = value(key, attributes[key])
    return entry


class JsonFormatter(logging.Formatter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry = record_fields(record, self.redactor)
        if record.exc_info:
            entry["exc"] = self.redactor.text(self.formatException(record.exc_info))
        if record.stack_info:
            entry["stack"] = self.redactor.text(self.formatStack(record.stack_info))
        try:
            return orjson.dumps(entry).decode()
        except (TypeError, orjson.JSONEncodeError):  # e.g. an int beyond 64 bits: never lose the event
            return orjson.dumps({k: v if isinstance(v, str) else repr(v) for k, v in entry.items()}).decode()


class TextFormatter(logging.Formatter):
    """`<ts> <LEVEL> <logger>: <msg> key=value ...` — the JSON fields, laid out for a terminal."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        entry = record_fields(record, self.redactor)
        line = f"{entry.pop('ts')} {entry.pop('level').upper():7} {entry.pop('logger')}: {entry.pop('msg')}"
        pairs = " ".join(f"{k}={_text_value(v)}" for k, v in entry.items())
        if pairs:
            line = f"{line}  {pairs}"
        if record.exc_info:
            line = f"{line}\n{self.redactor.text(self.formatException(record.exc_info))}"
        return line


# What makes a text-format value quoted: whitespace (\s is exactly str.isspace), a quote or "=".
NEEDS_QUOTES = re.compile(r"[\s\"'=]")


def _text_value(value: Any) -> str:
    if isinstance(value, str) and value and not NEEDS_QUOTES.search(value):
        return value
    try:
        return orjson.dumps(value, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):  # an int beyond 64 bits, a dict with non-str keys...
        return orjson.dumps(repr(value)).decode()


class PostroomHandler(logging.StreamHandler[TextIO]):
    """Marks the handler `setup_logging` installed, so a reload replaces it and leaves others alone."""

    def emit(self, record: logging.LogRecord) -> None:
        # StreamHandler.emit, minus a redundant flush: a line-buffered stream (stderr always is) has already
        # written the line at its "\n". `handle` holds the handler's lock around this, as for StreamHandler.
        try:
            stream = self.stream
            stream.write(self.format(record) + self.terminator)
            if not getattr(stream, "line_buffering", False) or "\n" not in self.terminator:
                stream.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


_UNKNOWN_CALLER = ("(unknown file)", 0, "(unknown function)", None)


class CallerlessLogger(logging.Logger):
    """A logger that does not walk the stack for each record's caller (file, line, function): about a third
    of a log line's cost (bench/micro/logcost.py), and no Postroom line carries them (RESERVED keeps
    LogRecord attributes out). `stack_info=True` still walks it: the "stack" field comes from there."""

    def findCaller(self, stack_info: bool = False, stacklevel: int = 1) -> tuple[str, int, str, str | None]:
        if not stack_info:
            return _UNKNOWN_CALLER
        return super().findCaller(stack_info, stacklevel + 1)  # + 1: this frame is not the caller


def skip_caller_lookup() -> None:
    """Process-wide: loggers made from now on, and the plain loggers made so far, are CallerlessLogger."""
    logging.setLoggerClass(CallerlessLogger)
    for logger in list(logging.Logger.manager.loggerDict.values()):
        if type(logger) is logging.Logger:  # not placeholders, not a library's own Logger subclass
            logger.__class__ = CallerlessLogger


def setup_logging(
    cfg: LoggingConfig, *, secrets: Sequence[str] = (), stream: TextIO | None = None
) -> logging.Handler:
    """Install Postroom's handler on the root logger (replacing a previous one: safe to call on reload)."""
    redactor = Redactor(secrets)
    formatter: logging.Formatter = (
        JsonFormatter(redactor) if cfg.format == "json" else TextFormatter(redactor)
    )
    handler = PostroomHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, PostroomHandler)]:
        root.removeHandler(old)
    root.addHandler(handler)
    level = LEVELS[cfg.level]
    root.setLevel(level)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.DEBUG if level == logging.DEBUG else logging.WARNING)
    return handler


def log_event(logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event: `msg` and `event` are both the event name, `fields` become top-level JSON keys.

    Field names that LogRecord reserves (`filename`, `module`, `args`, ...) would make logging raise, so
    they are written with a trailing underscore (`filename_`).
    """
    extra = {f"{k}_" if k in RESERVED else k: v for k, v in fields.items()}
    extra["event"] = event
    logger.log(level, event, extra=extra, stacklevel=2)
