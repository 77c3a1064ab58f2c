"""JSON log lines: one event per line, every extra kept, secrets never written."""

from __future__ import annotations

import contextlib
import io
import logging
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest

from postroom.app.config import config_from_mapping
from postroom.app.logsetup import configure_logging
from postroom.core import logs
from postroom.core.config import LoggingConfig
from postroom.core.logs import PostroomHandler, Redactor, log_event, setup_logging

WEBHOOK_SECRET = "whsec-7f3a9c"
log = logging.getLogger("postroom.test")


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def install(
    fmt: Literal["json", "text"] = "json", level: Literal["debug", "info", "warning", "error"] = "info"
) -> io.StringIO:
    stream = io.StringIO()
    setup_logging(LoggingConfig(level=level, format=fmt), secrets=[WEBHOOK_SECRET], stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_each_event_is_one_json_line_with_every_extra() -> None:
    stream = install()
    log.info(
        "filter verdict",
        extra={"event": "filter", "queue_id": "Q1", "tenant": "acme", "stage": "data", "verdict": "accept"},
    )
    log.warning("spool %s is slow", "incoming", extra={"queue_id": "Q2", "ms": 12.5, "rcpt": ["a@x", "b@x"]})

    first, second = lines(stream)
    assert datetime.fromisoformat(first.pop("ts")).tzinfo is not None
    assert first == {
        "level": "info",
        "logger": "postroom.test",
        "msg": "filter verdict",
        "event": "filter",
        "queue_id": "Q1",
        "tenant": "acme",
        "stage": "data",
        "verdict": "accept",
    }
    assert second["msg"] == "spool incoming is slow"
    assert (second["level"], second["ms"], second["rcpt"]) == ("warning", 12.5, ["a@x", "b@x"])


def test_exceptions_stay_on_the_event_line() -> None:
    stream = install()
    try:
        raise ValueError("multi\nline")
    except ValueError:
        log.exception("delivery crashed", extra={"queue_id": "Q3"})
    (event,) = lines(stream)
    assert event["queue_id"] == "Q3"
    assert "ValueError: multi\nline" in event["exc"]
    assert len(stream.getvalue().splitlines()) == 1


def test_secrets_are_redacted_by_key_by_value_and_in_urls() -> None:
    stream = install()
    log.info(
        "config loaded, signing with %s",
        WEBHOOK_SECRET,
        extra={
            "password": "hunter2",
            "headers": {"Authorization": "Bearer abc.def", "X-Trace": f"sig={WEBHOOK_SECRET}"},
            "redis": "redis://default:r3dispw@10.0.0.5:6379/0",
            "api_token": 12345,
            "items": [f"prefix-{WEBHOOK_SECRET}", "plain"],
        },
    )
    text = stream.getvalue()
    for leaked in (WEBHOOK_SECRET, "hunter2", "abc.def", "r3dispw", "12345"):
        assert leaked not in text
    (event,) = lines(stream)
    assert event["msg"] == "config loaded, signing with ***"
    assert event["password"] == "***"
    assert event["headers"] == {"Authorization": "***", "X-Trace": "sig=***"}
    assert event["redis"] == "redis://default:***@10.0.0.5:6379/0"
    assert event["api_token"] == "***"
    assert event["items"] == ["prefix-***", "plain"]


def test_extras_cannot_overwrite_core_fields_and_log_event_renames_reserved_names() -> None:
    stream = install()
    log.info("spoof", extra={"level": "critical", "ts": "1970"})
    log_event(log, "attachment_dropped", queue_id="Q4", filename="evil.exe", size=10)
    spoof, event = lines(stream)
    assert (spoof["level"], spoof["level_"], spoof["ts_"]) == ("info", "critical", "1970")
    assert event["msg"] == event["event"] == "attachment_dropped"
    assert (event["queue_id"], event["filename_"], event["size"]) == ("Q4", "evil.exe", 10)


def test_level_and_text_format() -> None:
    stream = install(fmt="text", level="warning")
    log.info("not shown", extra={"queue_id": "Q5"})
    log_event(log, "dead_lettered", level=logging.WARNING, queue_id="Q5", reason="http 410", secret="x")
    (line,) = stream.getvalue().splitlines()
    assert " WARNING postroom.test: dead_lettered  " in line
    assert 'queue_id=Q5 reason="http 410" secret=*** event=dead_lettered' in line


def test_setup_again_replaces_its_handler_and_keeps_others() -> None:
    root = logging.getLogger()
    other = logging.NullHandler()
    root.addHandler(other)
    install()
    second = install()
    log.info("once")
    assert sum(isinstance(h, PostroomHandler) for h in root.handlers) == 1
    assert other in root.handlers
    assert [e["msg"] for e in lines(second)] == ["once"]


# ---- the fast paths give what the plain code gave ---------------------------------------------------------


def test_values_needing_no_redaction_pass_unchanged_and_others_are_masked() -> None:
    redactor = Redactor([WEBHOOK_SECRET, "rspamd-pw"])
    assert redactor.text("queued as Q1 for acme") == "queued as Q1 for acme"
    assert redactor.text("see https://helpdesk.example/api") == "see https://helpdesk.example/api"
    assert redactor.text(f"a{WEBHOOK_SECRET}b rspamd-pw") == "a***b ***"
    assert redactor.text("POST https://u:pw@h.example/x") == "POST https://u:***@h.example/x"
    assert redactor.text(f"redis://default:{WEBHOOK_SECRET}@r:6379") == "redis://default:***@r:6379"
    assert [redactor.value("size", v) for v in (5210, 12.5, True, None, "")] == [5210, 12.5, True, None, ""]
    assert [redactor.value("api-key", v) for v in (5210, "k", None, "")] == ["***", "***", None, ""]
    assert redactor.value("note", b"tok " + WEBHOOK_SECRET.encode()) == "tok ***"


def test_nested_values_are_redacted_at_every_depth() -> None:
    stream = install()
    log.info(
        "webhook failed at %s",
        "https://hook:hookpw@helpdesk.example/api",
        extra={
            "queue_id": "Q6",
            "request": {
                "url": "https://hook:hookpw@helpdesk.example/api",
                "headers": {"Cookie": "session=abc", "X-Sig": f"v1={WEBHOOK_SECRET}"},
                "attempts": [{"status": 503, "token": "t0k"}, {"status": 201, "body": [WEBHOOK_SECRET, 1]}],
            },
            "tags": ("plain", f"x{WEBHOOK_SECRET}"),
        },
    )
    text = stream.getvalue()
    for leaked in (WEBHOOK_SECRET, "hookpw", "abc", "t0k"):
        assert leaked not in text
    (event,) = lines(stream)
    assert event["msg"] == "webhook failed at https://hook:***@helpdesk.example/api"
    assert event["request"] == {
        "url": "https://hook:***@helpdesk.example/api",
        "headers": {"Cookie": "***", "X-Sig": "v1=***"},
        "attempts": [{"status": 503, "token": "***"}, {"status": 201, "body": ["***", 1]}],
    }
    assert event["tags"] == ["plain", "x***"]


class Stage(str, Enum):  # noqa: UP042 -- not StrEnum: the mixin whose str() is "Stage.DATA", not its value
    DATA = "data"


def test_str_subclasses_are_written_as_their_plain_text() -> None:
    stream = install()
    log.info("verdict", extra={"stage": Stage.DATA})
    assert lines(stream)[0]["stage"] == "data"
    stream = install(fmt="text")
    log.info("verdict", extra={"stage": Stage.DATA})
    assert stream.getvalue().rstrip("\n").endswith("  stage=data")


def test_secret_key_verdicts_are_cached_within_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    cache: dict[str, bool] = {}
    monkeypatch.setattr(logs, "_secret_keys", cache)
    monkeypatch.setattr(logs, "SECRET_KEY_CACHE_SIZE", 2)
    stream = install()
    for _ in range(2):
        log.info("e", extra={"tenant": "acme", "x_api_key": "k1", "size": 1, "db_password": "p1"})
    assert len(cache) == 2
    assert [(e["tenant"], e["x_api_key"], e["size"], e["db_password"]) for e in lines(stream)] == [
        ("acme", "***", 1, "***")
    ] * 2


def test_each_record_shape_gets_its_own_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "_extras", {})
    monkeypatch.setattr(logs, "EXTRAS_CACHE_SIZE", 1)
    stream = install()
    log.info("a", extra={"queue_id": "Q7", "logger": "spoof"})
    log.info("b", extra={"session": "S1", "_private": 1})
    log.info("a", extra={"queue_id": "Q8", "logger": "spoof"})
    record = logging.LogRecord("postroom.test", logging.INFO, __file__, 1, "c", (), None)
    record.queue_id = "Q9"
    logging.Formatter().format(record)  # another handler first: sets `message`, which is no extra
    logging.getLogger().handle(record)
    assert [{k: v for k, v in e.items() if k != "ts"} for e in lines(stream)] == [
        {"level": "info", "logger": "postroom.test", "msg": "a", "queue_id": "Q7", "logger_": "spoof"},
        {"level": "info", "logger": "postroom.test", "msg": "b", "session": "S1"},
        {"level": "info", "logger": "postroom.test", "msg": "a", "queue_id": "Q8", "logger_": "spoof"},
        {"level": "info", "logger": "postroom.test", "msg": "c", "queue_id": "Q9"},
    ]
    assert len(logs._extras) == 1


# nextafter(...): the microseconds round up into the next second (and the next day).
@pytest.mark.parametrize(
    "created",
    [0.0, 1e-7, 5e-7, 1.5e-6, 2.5e-6, 0.0005, 0.9995, 1714564800.0, 1714564800.999, 1714607999.9995,
     math.nextafter(1714564801.0, 0), math.nextafter(1714608000.0, 0), 1714608000.5, -0.5, -1.9999996],
)  # fmt: skip
def test_timestamps_are_what_datetime_gives(created: float) -> None:
    expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
    assert logs.utc_timestamp(created) == expected.replace("+00:00", "Z")


def test_timestamps_over_many_seconds_and_fractions() -> None:
    rng = random.Random(7)
    moments = sorted(1714564800 + rng.random() * 200_000 for _ in range(5000))
    for created in moments + moments[::-1]:
        expected = datetime.fromtimestamp(created, UTC).isoformat(timespec="milliseconds")
        assert logs.utc_timestamp(created) == expected.replace("+00:00", "Z")


@pytest.mark.parametrize(
    ("value", "written"),
    [("plain", "plain"), ("a b", '"a b"'), ("a\u00a0b", '"a\u00a0b"'), ("k=v", '"k=v"'), ('x"y', '"x\\"y"'),
     ("it's", '"it\'s"'), ("", '""'), (3, "3"), (None, "null"), (["a", 1], '["a",1]')],
)  # fmt: skip
def test_text_format_quotes_what_it_quoted_before(value: object, written: str) -> None:
    stream = install(fmt="text")
    log.info("v", extra={"v": value})
    assert stream.getvalue().rstrip("\n").endswith(f"  v={written}")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_a_value_json_cannot_encode_is_written_as_its_repr(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = install(fmt=fmt)
    log.info("odd values", extra={"queue_id": "Q9", "big": 2**70})
    out = stream.getvalue()
    assert "Q9" in out and str(2**70) in out
    assert "Logging error" not in capsys.readouterr().err  # logging's handleError never had to step in


def test_stack_info_is_kept() -> None:
    stream = install()
    log.warning("slow path", stack_info=True)
    (event,) = lines(stream)
    assert event["stack"].startswith("Stack (most recent call last):")
    assert "test_stack_info_is_kept" in event["stack"]


@pytest.mark.parametrize("buffering", [1, 65536])
def test_each_line_reaches_the_file_at_once(tmp_path: Path, buffering: int) -> None:
    path = tmp_path / "postroom.log"
    with path.open("w", buffering=buffering) as out:
        setup_logging(LoggingConfig(), stream=out)
        log.info("first", extra={"queue_id": "Q10"})
        assert orjson.loads(path.read_bytes())["queue_id"] == "Q10"
        log.info("second")
        assert len(path.read_bytes().splitlines()) == 2


def test_serve_configuration_writes_the_same_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    for knob in ("logThreads", "logProcesses", "logMultiprocessing"):
        monkeypatch.setattr(logging, knob, getattr(logging, knob))  # restored after the test
    secrets = {"webhook": {"secret": WEBHOOK_SECRET}, "filters": {"rspamd": {"password": "rpw"}}}
    config = config_from_mapping(secrets)
    stream = io.StringIO()
    with contextlib.redirect_stderr(stream):
        configure_logging(config)
    log.info("delivered via rpw", extra={"queue_id": "Q11", "tenant": "acme", "status": 201, "ms": 12.3})
    log.warning("stack", stack_info=True)
    first, second = lines(stream)
    assert datetime.fromisoformat(first.pop("ts")).tzinfo is not None
    assert first == {
        "level": "info",
        "logger": "postroom.test",
        "msg": "delivered via ***",
        "queue_id": "Q11",
        "tenant": "acme",
        "status": 201,
        "ms": 12.3,
    }
    assert "test_serve_configuration_writes_the_same_lines" in second["stack"]


def test_serve_loggers_skip_the_caller_lookup_but_keep_stack_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logging, "_loggerClass", logging.getLoggerClass())  # restored after the test
    made_before = logging.Logger("postroom.test.before")
    monkeypatch.setitem(logging.Logger.manager.loggerDict, "postroom.test.before", made_before)
    logs.skip_caller_lookup()
    made_after = logging.getLogger("postroom.test.after")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    for logger in (made_before, made_after):
        assert isinstance(logger, logs.CallerlessLogger)
        logger.addHandler(Keep())
        logger.warning("plain")
        logger.warning("with stack", stack_info=True)
        _warn_for_my_caller(logger)
    for plain, stacked, via_helper in (records[:3], records[3:]):
        assert (plain.pathname, plain.lineno, plain.stack_info) == ("(unknown file)", 0, None)
        for record in (stacked, via_helper):  # the caller, as a plain logger finds it, never logs.py
            assert record.funcName == "test_serve_loggers_skip_the_caller_lookup_but_keep_stack_info"
            assert record.pathname == __file__
            assert record.stack_info is not None
            last_line = record.stack_info.rstrip().splitlines()[-1].strip()
            assert last_line.startswith(("logger.warning", "_warn_for_my_caller"))


def _warn_for_my_caller(logger: logging.Logger) -> None:
    logger.warning("via a helper", stack_info=True, stacklevel=2)
