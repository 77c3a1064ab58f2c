"""The `postroom` command. Every error is one clear line on stderr and a non-zero exit, never a traceback."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import orjson

from postroom.app import blockcli, deadletter, queueview, trace
from postroom.app import relaycli as outbound_cli
from postroom.app.config import Config, load_config, signing_secrets
from postroom.core.configload import ConfigError
from postroom.core.queue_ids import InvalidQueueId, parse_queue_id
from postroom.core.secret_policy import check_secrets
from postroom.core.spool import Spool, SpoolError

T = TypeVar("T")
EXIT_USAGE = 2
EXIT_FAILURE = 1

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A problem to report to the operator in one line."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        args.config_obj = _load(args)
        return handler(args)
    except ConfigError as exc:
        print(f"postroom: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (CliError, SpoolError, InvalidQueueId) as exc:
        print(f"postroom: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except OSError as exc:
        print(f"postroom: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


def _load(args: argparse.Namespace) -> Config:
    return load_config(getattr(args, "config", None))


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", metavar="FILE", help="TOML config (default: embedded defaults)")
    parser = argparse.ArgumentParser(prog="postroom", description="Inbound mail pipeline for helpdesks.")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = sub.add_parser("serve", parents=[common], help="run the MX listener and the delivery runner")
    serve.set_defaults(handler=cmd_serve)

    demo = sub.add_parser(
        "demo", parents=[common], help="run with a local demo helpdesk and send a sample mail"
    )
    demo.add_argument("--once", action="store_true", help="exit after the first ticket arrives")
    demo.set_defaults(handler=cmd_demo)

    check = sub.add_parser(
        "check", parents=[common], help="print the ticket for .eml files without delivering"
    )
    check.add_argument("files", nargs="+", metavar="FILE", help=".eml files, or - for standard input")
    check.add_argument("--tenant", default="check")
    check.add_argument("--mailbox", default="support")
    check.add_argument(
        "--mail-from",
        default=None,
        help="envelope sender ('' = null sender; default: Return-Path, else From)",
    )
    check.add_argument("--client-ip", default="127.0.0.1", help="client address for DNSBL and SPF")
    check.add_argument("--helo", default="localhost.localdomain", help="HELO name for the HELO checks")
    check.set_defaults(handler=cmd_check)

    queue = sub.add_parser("queue", parents=[common], help="spool counts by state and age (like qshape)")
    queue.add_argument("--json", action="store_true")
    queue.set_defaults(handler=cmd_queue)

    _add_dead_letter(sub, common)
    # Subcommands that live beside the code they operate on.
    trace.register(sub, [common])
    blockcli.register(sub, [common])
    outbound_cli.register(sub, [common])
    return parser


def _add_dead_letter(sub: Any, common: argparse.ArgumentParser) -> None:
    dead = sub.add_parser("dead-letter", help="inspect, replay and purge messages the helpdesk refused")
    dsub = dead.add_subparsers(title="actions", metavar="ACTION")
    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument("--tenant")
    selection.add_argument("--since", help="ISO date/time (UTC if no zone) or seconds ago, e.g. 3600")
    selection.add_argument("--reason", help="substring of the dead-letter reason")

    listing = dsub.add_parser("list", parents=[common, selection], help="list dead letters")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_dead_list)

    show = dsub.add_parser("show", parents=[common], help="show one dead letter with its delivery history")
    show.add_argument("id")
    show.set_defaults(handler=cmd_dead_show)

    for name, handler, verb in (
        ("replay", cmd_dead_replay, "deliver again"),
        ("purge", cmd_dead_purge, "delete"),
    ):
        action = dsub.add_parser(name, parents=[common, selection], help=f"{verb} dead letters")
        action.add_argument("ids", nargs="*", metavar="ID")
        action.add_argument("--all", action="store_true", help="every dead letter matching the selection")
        action.add_argument("--dry-run", action="store_true", help="show what would happen")
        action.set_defaults(handler=handler)


# ---- commands ---------------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from postroom.app.logsetup import configure_logging
    from postroom.app.workers import supervise, worker_index

    config: Config = args.config_obj
    check_secrets(signing_secrets(config))  # a guessable key would let anyone forge what it signs
    configure_logging(config)
    worker = worker_index()
    if worker is None and config.smtp.workers > 1:  # only a config file can ask for workers
        # The supervisor never imports the pipeline (postroom.app.serve): ~20 MB less resident.
        _run_async(supervise(config, os.path.abspath(args.config)))
        return 0
    from postroom.app.serve import serve

    _run_async(serve(config, config_path=args.config, worker=worker))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from postroom.app.demo import run_demo

    return _run_async(run_demo(args.config_obj if args.config else None, once=args.once))


def cmd_check(args: argparse.Namespace) -> int:
    from postroom.app.checkcmd import Envelope, check_message, report_decision

    config: Config = args.config_obj
    envelope = Envelope(args.tenant, args.mailbox, args.mail_from, args.client_ip, args.helo)
    status = 0
    for index, name in enumerate(args.files, start=1):
        try:
            raw = sys.stdin.buffer.read() if name == "-" else _read_file(name)
        except CliError as exc:
            print(f"postroom: {exc}", file=sys.stderr)
            status = EXIT_FAILURE
            continue
        body, decision = _run_async(check_message(config, raw, envelope, index))
        sys.stdout.buffer.write(body + b"\n")
        sys.stdout.flush()
        report_decision(name, decision)
    return status


def cmd_queue(args: argparse.Namespace) -> int:
    from postroom.core.spool import open_spool

    config: Config = args.config_obj
    outbound_dir = Path(config.outbound.spool_dir(config.spool.path))
    outbound = Spool(outbound_dir) if outbound_dir.is_dir() else None
    report = queueview.queue_report(open_spool(config.spool), outbound, time.time())
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    else:
        print(queueview.render_text(report))
    return 0


def cmd_dead_list(args: argparse.Namespace) -> int:
    spool = _spool(args)
    letters = deadletter.list_dead(spool, _selection(args))
    if args.json:
        for letter in letters:
            print(orjson.dumps(letter.as_dict()).decode())
        return 0
    if not letters:
        print("no dead letters")
        return 0
    print(f"{'ID':<20} {'TENANT':<16} {'DEAD AT (UTC)':<20} {'STATUS':>6} {'TRIES':>5}  REASON")
    for letter in letters:
        status = "-" if letter.status is None else str(letter.status)
        print(
            f"{letter.id:<20} {letter.tenant[:16]:<16} {_when(letter.dead_at):<20} "
            f"{status:>6} {letter.attempts:>5}  {letter.reason[:80]}"
        )
    return 0


def cmd_dead_show(args: argparse.Namespace) -> int:
    print(orjson.dumps(deadletter.show(_spool(args), args.id), option=orjson.OPT_INDENT_2).decode())
    return 0


def cmd_dead_replay(args: argparse.Namespace) -> int:
    spool = _spool(args)
    moved = deadletter.replay(spool, _chosen_ids(args, spool), dry_run=args.dry_run)
    verb = "would replay" if args.dry_run else "replayed"
    for queue_id in moved:
        print(f"{verb} {queue_id}")
    print(f"{verb} {len(moved)} message(s)")
    return 0


def cmd_dead_purge(args: argparse.Namespace) -> int:
    spool = _spool(args)
    removed = deadletter.purge(spool, _chosen_ids(args, spool), dry_run=args.dry_run)
    verb = "would purge" if args.dry_run else "purged"
    print(f"{verb} {len(removed)} message(s)")
    return 0


# ---- helpers ----------------------------------------------------------------------------------------------


def _spool(args: argparse.Namespace) -> Any:
    from postroom.core.spool import open_spool

    return open_spool(args.config_obj.spool)


def _chosen_ids(args: argparse.Namespace, spool: Any) -> list[str]:
    selection = _selection(args)
    if args.all:
        if args.ids:
            raise CliError("give either IDs or --all, not both")
        return [letter.id for letter in deadletter.list_dead(spool, selection)]
    if not args.ids:
        raise CliError("name the messages (IDs) or use --all")
    if selection != deadletter.DeadLetterFilter():
        raise CliError("--tenant/--since/--reason select messages only together with --all")
    return [parse_queue_id(text) for text in args.ids]  # every id checked before any is acted on


def _selection(args: argparse.Namespace) -> deadletter.DeadLetterFilter:
    return deadletter.DeadLetterFilter(
        tenant=args.tenant, since=parse_since(args.since) if args.since else None, reason=args.reason
    )


def parse_since(value: str) -> float:
    """'3600' (seconds ago), '2026-11-20' or '2026-11-20T10:00:00+01:00' → epoch seconds."""
    if value.isdigit():
        return time.time() - int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(f"--since: expected seconds or an ISO date/time, got {value!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _read_file(name: str) -> bytes:
    try:
        with open(name, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise CliError(f"{name}: {exc.strerror or exc}") from None


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # uvloop is an optional speed-up
        return asyncio.run(coro)
    return uvloop.run(coro)


if __name__ == "__main__":
    # Like the `postroom` entry point: no handler of our own until a command configures logging (serve
    # installs the JSON one; a second root handler here would print every warning twice).
    sys.exit(main())
