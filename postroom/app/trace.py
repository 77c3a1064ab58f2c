"""`postroom trace <queue id>`: one message's history from the spool and the JSON logs, in time order.

The spool gives the envelope, the delivery history kept beside the message and where it is now; the logs


"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from postroom.app.config import Config
from postroom.core.queue_ids import parse_queue_id
from postroom.core.spool import Spool, SpoolError

SPOOL = "spool"
# Keys a human trace line leaves out: shown in its fixed columns, or the traced id itself.
_SHOWN = frozenset({"ts", "at", "queued_at", "level", "logger", "event", "id", "queue_id"})


def trace(queue_id: str, *, spool: Spool, log_paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Events as `{"at": epoch seconds or None, "source": "spool" or a log path, "event", "detail"}`.

    Sorted by time; events without a time (non-JSON log lines) come last.
    """
    queue_id = parse_queue_id(queue_id)  # InvalidQueueId is a ValueError
    events = spool_events(queue_id, spool)
    for path in log_paths:
        events.extend(log_events(queue_id, path))
    events.sort(key=lambda e: math.inf if e["at"] is None else e["at"])
    return events


def spool_events(queue_id: str, spool: Spool) -> list[dict[str, Any]]:
    for _ in range(3):  # the runner may move the message between locate() and the read: look again
        state = spool.locate(queue_id)
        if state is None:
            return [_event(spool.clock(), SPOOL, "not in spool", {"state": None})]
        try:
            meta = spool.read_meta(state, queue_id)
        except (FileNotFoundError, SpoolError):
            continue
        delivery = spool.load_state(queue_id)
        events = [_event(meta.get("queued_at"), SPOOL, "queued", meta)]
        events += [_event(h.get("at"), SPOOL, str(h.get("event", "?")), h) for h in delivery.history]
        summary = {
            "state": state,
            "attempts": delivery.attempts,
            "next_attempt_at": delivery.next_attempt_at,
            "last_status": delivery.last_status,
            "last_error": delivery.last_error,
            "dead_reason": delivery.dead_reason,
        }
        events.append(_event(spool.clock(), SPOOL, f"now in {state}/", summary))
        return events
    return [_event(spool.clock(), SPOOL, "moving in spool", {"state": None})]


def log_events(queue_id: str, path: Path) -> Iterator[dict[str, Any]]:
    """Lines of one log file that mention the id; JSON lines are parsed, anything else kept as text."""
    needle = queue_id.encode()
    with _open_log(path) as fh:
        for line in fh:
            if needle not in line:
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                record = None
            if isinstance(record, dict):
                event = str(record.get("event") or record.get("msg") or "log")
                yield _event(_parse_ts(record.get("ts")), str(path), event, record)
            else:
                text = line.decode("utf-8", "replace").rstrip("\n")
                yield _event(None, str(path), "log line", {"line": text})


@contextlib.contextmanager
def _open_log(path: Path) -> Iterator[Iterable[bytes]]:
    if str(path) == "-":
        yield sys.stdin.buffer  # not closed: it is the process's stdin
        return
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        yield fh


def _event(at: Any, source: str, event: str, detail: dict[str, Any]) -> dict[str, Any]:
    when = float(at) if isinstance(at, int | float) else None
    return {"at": when, "source": source, "event": event, "detail": detail}


def _parse_ts(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def format_event(event: dict[str, Any]) -> str:
    """One human line: time, source, event, then the detail as key=value."""
    at = event["at"]
    when = "-" if at is None else _iso(at)
    source = Path(event["source"]).name
    detail = event["detail"]
    pairs = " ".join(
        f"{k}={_iso(v) if k.endswith('_at') and isinstance(v, int | float) else _short(v)}"
        for k, v in detail.items()
        if k not in _SHOWN and v not in (None, "", [], {}) and not (k == "msg" and v == event["event"])
    )
    return f"{when:24}  {source:12}  {event['event']:20}  {pairs}".rstrip()


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value, default=str).decode()
    return text if len(text) <= 200 else f"{text[:197]}..."


# ---- command line ---------------------------------------------------------------------------------------


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add `trace` (with `parents`, e.g. the one holding --config); its handler is `args.handler(args) -> int`
    and reads the parsed config from `args.config_obj`."""
    parser = subparsers.add_parser(
        "trace",
        parents=list(parents),
        help="show one message's history from the spool and the logs",
        description="Print a message's history (spool state and delivery history, plus matching JSON log "
        "lines) in time order.",
    )
    parser.add_argument("queue_id", help="the id from '250 queued as ID'")
    parser.add_argument(
        "--log",
        dest="logs",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="a JSON log file to search (repeatable; .gz is read, '-' reads standard input)",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per event, for scripts")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    config: Config = args.config_obj
    spool = Spool(config.spool.path)
    try:
        events = trace(args.queue_id, spool=spool, log_paths=args.logs)
    except ValueError as exc:
        print(f"postroom trace: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"postroom trace: cannot read {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 2
    for event in events:
        if args.json:
            print(orjson.dumps(event, default=str).decode())
        else:
            print(format_event(event))
    found = any(e["source"] != SPOOL or e["detail"].get("state") for e in events)
    if not found:
        print(f"postroom trace: no trace of {args.queue_id}", file=sys.stderr)
    return 0 if found else 1
