"""`postroom hash-password`, `postroom suppression list|add|remove` and `postroom dkim-keygen`.

`register(subparsers, parents)` adds the commands to the `postroom` parser; each handler gets the loaded
config as `args.config_obj` and returns the exit code. Errors are one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import re
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import orjson

from postroom.app.config import Config

if TYPE_CHECKING:
    from outbound.suppression import SuppressionEntry, SuppressionList

# Each command imports what it needs (Redis client, DKIM, scrypt) when it runs: the parser is built by
# every `postroom` invocation, `serve`'s supervisor included, which then need not carry them in memory.

EXIT_OK = 0
EXIT_ERROR = 2
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
T = TypeVar("T")


class CommandError(Exception):
    """Reported as one line and exit code 2."""


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add the outbound commands. `parents` carry --config (e.g. the `postroom` common parser); without
    them each command gets its own --config option."""
    parents = list(parents) or [_config_option()]

    hashing = subparsers.add_parser(
        "hash-password",
        parents=parents,
        help="print a password hash for [[submission.users]] (password from stdin, or prompted)",
    )
    hashing.set_defaults(handler=_guarded(cmd_hash_password))

    suppression = subparsers.add_parser("suppression", help="the outbound suppression list")
    actions = suppression.add_subparsers(title="actions", metavar="ACTION")
    listing = actions.add_parser("list", parents=parents, help="list suppressed addresses")
    listing.add_argument("--json", action="store_true", help="one JSON array instead of a table")
    listing.set_defaults(handler=_guarded(cmd_suppression_list))
    adding = actions.add_parser("add", parents=parents, help="suppress an address")
    adding.add_argument("address")
    adding.add_argument(
        "--for",
        dest="ttl",
        type=parse_duration,
        metavar="DURATION",
        help="e.g. 3600, 90m, 12h, 30d (default: until removed)",
    )
    adding.add_argument("--reason", default="added by operator")
    adding.set_defaults(handler=_guarded(cmd_suppression_add))
    removing = actions.add_parser("remove", parents=parents, help="lift a suppression")
    removing.add_argument("address")
    removing.set_defaults(handler=_guarded(cmd_suppression_remove))

    keygen = subparsers.add_parser(
        "dkim-keygen", parents=parents, help="write a new DKIM private key and print its DNS record"
    )
    keygen.add_argument("--domain", required=True)
    keygen.add_argument("--selector", help="default: [dkim] selector")
    keygen.add_argument("--out", required=True, type=Path, help="private key file to create (mode 0600)")
    keygen.add_argument("--bits", type=int, default=2048, choices=(1024, 2048, 3072, 4096))
    keygen.set_defaults(handler=_guarded(cmd_dkim_keygen))


def _config_option() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", "-c", metavar="FILE", help="TOML config (default: embedded defaults)")
    return common


def parse_duration(text: str) -> float:
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive duration: {text!r} (e.g. 3600, 90m, 12h, 30d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _guarded(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from redis.exceptions import RedisError

        from outbound.suppression import SuppressionError

        try:
            return handler(args)
        except (CommandError, SuppressionError, RedisError, ValueError) as exc:
            print(f"postroom: error: {exc}", file=sys.stderr)
        except OSError as exc:
            print(
                f"postroom: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr
            )
        return EXIT_ERROR

    return run


# ---- hash-password ----------------------------------------------------------------------------------------


def cmd_hash_password(args: argparse.Namespace) -> int:
    from outbound.passwords import hash_password

    print(hash_password(_read_password()))
    return EXIT_OK


def _read_password() -> str:
    """From a pipe, the first line; on a terminal, prompted twice. Never from argv (visible in `ps`)."""
    if not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise CommandError("the passwords differ")
    if not password:
        raise CommandError("empty password")
    return password


# ---- suppression ------------------------------------------------------------------------------------------


def cmd_suppression_list(args: argparse.Namespace) -> int:
    entries = _with_suppression(args.config_obj, lambda s: s.entries())
    if args.json:
        print(orjson.dumps([e.as_dict() for e in entries], option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    if not entries:
        print("no suppressed addresses")
        return EXIT_OK
    print(f"{'ADDRESS':<40} {'EXPIRES (UTC)':<20} {'SOURCE':<10} REASON")
    for entry in entries:
        print(f"{entry.address:<40} {_expiry(entry):<20} {entry.source:<10} {entry.reason}")
    return EXIT_OK


def cmd_suppression_add(args: argparse.Namespace) -> int:
    async def add(suppression: SuppressionList) -> None:
        await suppression.add(args.address, reason=args.reason, source="cli", ttl=args.ttl)

    _with_suppression(args.config_obj, add)
    until = "until removed" if args.ttl is None else f"for {args.ttl:g} s"
    print(f"suppressed {args.address} {until}")
    return EXIT_OK


def cmd_suppression_remove(args: argparse.Namespace) -> int:
    if not _with_suppression(args.config_obj, lambda s: s.remove(args.address)):
        raise CommandError(f"{args.address} is not suppressed")
    print(f"removed {args.address}")
    return EXIT_OK


def _with_suppression(cfg: Config, action: Callable[[SuppressionList], Awaitable[T]]) -> T:
    import redis.asyncio

    from outbound.suppression import open_suppression

    async def run() -> T:
        client = redis.asyncio.from_url(cfg.redis.url) if cfg.redis.url else None
        try:
            return await action(open_suppression(cfg, client))
        finally:
            if client is not None:
                await client.aclose()

    return asyncio.run(run())


def _expiry(entry: SuppressionEntry) -> str:
    if entry.expires_at is None:
        return "never"
    return datetime.fromtimestamp(entry.expires_at, UTC).strftime("%Y-%m-%d %H:%M:%S")


# ---- dkim-keygen ------------------------------------------------------------------------------------------


def cmd_dkim_keygen(args: argparse.Namespace) -> int:
    from outbound.dkim import generate_key, write_private_key

    cfg: Config = args.config_obj
    selector = args.selector or cfg.dkim.selector
    domain = args.domain.lower().rstrip(".")
    if args.out.exists():
        raise CommandError(f"{args.out} exists; refusing to overwrite a key")
    pem, txt = generate_key(args.bits)
    write_private_key(args.out, pem)
    print(f'wrote {args.out}; publish this TXT record, then add to [dkim] keys: "{domain}" = "{args.out}"')
    print(f"{selector}._domainkey.{domain}. IN TXT {_quoted_chunks(txt)}")
    return EXIT_OK


def _quoted_chunks(value: str, size: int = 250) -> str:
    """A TXT value as quoted strings of at most 255 octets each (RFC 1035 character-strings)."""
    return " ".join(f'"{value[i : i + size]}"' for i in range(0, len(value), size))
