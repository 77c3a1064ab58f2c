"""`postroom trace`: a message's story from a real spool and real JSON log files, in time order."""

from __future__ import annotations

import argparse
import gzip
import io
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from postroom.app.config import Config
from postroom.app.trace import format_event, register, trace
from postroom.core.config import LoggingConfig, SpoolConfig
from postroom.core.logs import log_event, setup_logging
from postroom.core.spool import ACTIVE, DEFERRED, INCOMING, Spool

T0 = 1_700_000_000.0


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool", clock=lambda: T0 + 100, fsync=False).create()


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Postroom's real JSON formatter writing to a buffer; restored afterwards."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    stream = io.StringIO()
    setup_logging(LoggingConfig(), stream=stream)
    yield stream
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)


def deferred_message(spool: Spool) -> str:
    queue_id = spool.store([({"tenant": "acme", "queued_at": T0}, b"Subject: hi\r\n\r\nbody\r\n")])[0]
    spool.move(queue_id, INCOMING, ACTIVE)
    state = spool.load_state(queue_id)
    state.attempts = 1
    state.last_status = 503
    state.next_attempt_at = T0 + 60
    state.add_history({"at": T0 + 5, "event": "attempt", "attempt": 1})
    state.add_history({"at": T0 + 6, "event": "deferred", "status": 503})
    spool.save_state(queue_id, state)
    spool.move(queue_id, ACTIVE, DEFERRED)
    return queue_id


def write_log(path: Path, stream: io.StringIO, *, stamp: dict[str, float]) -> None:
    """Write the captured lines with the given ts per event, so the order across sources is known."""
    out = []
    for line in stream.getvalue().splitlines():
        record = orjson.loads(line)
        record["ts"] = _iso(stamp[record["event"]])
        out.append(orjson.dumps(record).decode())
    path.write_text("\n".join(out) + "\n")


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_trace_merges_spool_history_and_log_lines_in_time_order(
    spool: Spool, json_log: io.StringIO, tmp_path: Path
) -> None:
    queue_id = deferred_message(spool)
    log = logging.getLogger("postroom.smtp")
    log_event(log, "connect", session="S1", client_ip="127.0.0.2", queue_id=queue_id)
    log_event(log, "filter", queue_id=queue_id, stage="data", filter="rspamd", result="pass")
    log_event(log, "queued", queue_id=queue_id, tenant="acme")
    log_event(log, "queued", queue_id="0000000000000OTHER0", tenant="globex")
    current = tmp_path / "postroom.log"
    write_log(current, json_log, stamp={"connect": T0 - 2, "filter": T0 - 1, "queued": T0 + 0.5})
    rotated = tmp_path / "postroom.log.1.gz"
    rotated.write_bytes(gzip.compress(f"not json but mentions {queue_id}\n".encode()))

    events = trace(queue_id, spool=spool, log_paths=[current, rotated])

    assert [(e["source"], e["event"]) for e in events] == [
        (str(current), "connect"),
        (str(current), "filter"),
        ("spool", "queued"),
        (str(current), "queued"),
        ("spool", "attempt"),
        ("spool", "deferred"),
        ("spool", "now in deferred/"),
        (str(rotated), "log line"),
    ]
    assert events[2]["detail"]["tenant"] == "acme"
    assert events[1]["detail"]["filter"] == "rspamd"
    assert events[6]["detail"] == {
        "state": "deferred",
        "attempts": 1,
        "next_attempt_at": T0 + 60,
        "last_status": 503,
        "last_error": "",
        "dead_reason": "",
    }
    assert "OTHER" not in orjson.dumps(events).decode()
    assert format_event(events[1]).split() == [
        _iso(T0 - 1),
        "postroom.log",
        "filter",
        "stage=data",
        "filter=rspamd",
        "result=pass",
    ]


def test_trace_of_a_delivered_message_comes_from_the_logs_only(spool: Spool, tmp_path: Path) -> None:
    log_file = tmp_path / "postroom.log"
    log_file.write_text(
        '{"ts":"2023-11-14T22:13:20.000Z","event":"delivered","queue_id":"0018F2A6B3C4D5E6A01"}\n'
    )
    events = trace("0018F2A6B3C4D5E6A01", spool=spool, log_paths=[log_file])
    assert [(e["source"], e["event"]) for e in events] == [
        (str(log_file), "delivered"),
        ("spool", "not in spool"),
    ]
    assert events[0]["at"] == T0


def test_trace_refuses_ids_that_are_not_queue_ids(spool: Spool) -> None:
    with pytest.raises(ValueError, match="not a queue id"):
        trace("../state/x", spool=spool, log_paths=[])


def run_cli(argv: list[str], spool: Spool) -> tuple[int, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="postroom")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config")
    register(parser.add_subparsers(dest="command", required=True), parents=[common])
    args = parser.parse_args(argv)
    args.config_obj = Config(spool=SpoolConfig(path=str(spool.root)))
    code: int = args.handler(args)
    return code, args


def test_cli_prints_json_lines_and_exits_1_when_nothing_is_known(
    spool: Spool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_id = deferred_message(spool)
    log_file = tmp_path / "a.log"
    log_file.write_text(f'{{"ts":"2023-11-14T22:13:21Z","event":"queued","queue_id":"{queue_id}"}}\n')

    code, args = run_cli(["trace", queue_id, "--log", str(log_file), "--json", "--config", "p.toml"], spool)
    out = capsys.readouterr().out.splitlines()
    assert (code, args.logs, args.config) == (0, [log_file], "p.toml")
    assert [orjson.loads(line)["event"] for line in out] == [
        "queued",
        "queued",
        "attempt",
        "deferred",
        "now in deferred/",
    ]

    code, _ = run_cli(["trace", "0000000000000D0E000"], spool)
    assert code == 1
    assert "no trace of 0000000000000D0E000" in capsys.readouterr().err

    code, _ = run_cli(["trace", queue_id, "--log", str(tmp_path / "missing.log")], spool)
    assert code == 2
    assert "cannot read" in capsys.readouterr().err
