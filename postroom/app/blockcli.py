"""`postroom block add|list|remove`: the operator's hand on the dynamic block-list.

Works on Redis when `[redis] url` is set (every node sees the change at its next connection), else on
`<spool>/blocklist.json`, which a running server reloads when it changes. Errors are one line on stderr and
exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TypeVar

from filters.blocklist import (
    BlockEntry,
    BlockList,
    BlockListFileError,
    LocalBlockList,
    blocklist_path,
    parse_network,
)
from filters.throttle_store import StoreUnavailable
from postroom.app.config import Config

EXIT_ERROR = 2
T = TypeVar("T")


class BlockCommandError(Exception):
    """A problem reported to the operator as one line."""


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add `block` and its actions; each handler is `args.handler(args) -> int` reading `args.config_obj`."""
    block = subparsers.add_parser("block", help="show and edit the dynamic block-list of client addresses")
    actions = block.add_subparsers(title="actions", metavar="ACTION")

    add = actions.add_parser("add", parents=list(parents), help="refuse an address or network at connect")
    add.add_argument("target", metavar="IP|CIDR")
    add.add_argument(
        "--for",
        dest="seconds",
        type=float,
        metavar="SECONDS",
        help="how long (default: [filters.throttle] block_duration)",
    )
    add.add_argument("--reason", default="blocked by operator", metavar="TEXT")
    add.set_defaults(handler=run_add)

    listing = actions.add_parser("list", parents=list(parents), help="entries that have not expired")
    listing.add_argument("--json", action="store_true", help="a JSON array, for scripts")
    listing.set_defaults(handler=run_list)

    remove = actions.add_parser("remove", parents=list(parents), help="lift a block before it expires")
    remove.add_argument("target", metavar="IP|CIDR")
    remove.set_defaults(handler=run_remove)


def run_add(args: argparse.Namespace) -> int:
    config: Config = args.config_obj
    seconds = config.filters.throttle.block_duration if args.seconds is None else args.seconds
    if not seconds > 0:
        return _fail(f"--for must be a positive number of seconds, got {args.seconds:g}")
    now = time.time()
    try:
        entry = BlockEntry(_network(args.target), args.reason, now + seconds, now, source="manual")
        asyncio.run(_with_blocklist(config, lambda bl: bl.add(entry)))
    except BlockCommandError as exc:
        return _fail(str(exc))
    print(f"blocked {entry.network} until {_iso(entry.expires_at)}: {entry.reason}")
    return 0


def run_list(args: argparse.Namespace) -> int:
    try:
        entries = asyncio.run(_with_blocklist(args.config_obj, lambda bl: bl.entries(time.time())))
    except BlockCommandError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps([{**e.as_dict(), "expires": _iso(e.expires_at)} for e in entries], indent=2))
    elif not entries:
        print("block-list is empty")
    else:
        width = max(len("NETWORK"), *(len(e.network) for e in entries))
        print(f"{'NETWORK':<{width}}  {'EXPIRES (UTC)':<20}  {'SOURCE':<6}  REASON")
        for e in entries:
            print(f"{e.network:<{width}}  {_iso(e.expires_at):<20}  {e.source:<6}  {e.reason}")
    return 0


def run_remove(args: argparse.Namespace) -> int:
    try:
        network = _network(args.target)
        removed = asyncio.run(_with_blocklist(args.config_obj, lambda bl: bl.remove(network)))
    except BlockCommandError as exc:
        return _fail(str(exc))
    if not removed:
        return _fail(f"no block-list entry for {network}")
    print(f"removed {network}")
    return 0


async def _with_blocklist(config: Config, operation: Callable[[BlockList], Awaitable[T]]) -> T:
    async with open_blocklist(config) as blocklist:
        try:
            return await operation(blocklist)
        except StoreUnavailable as exc:
            raise BlockCommandError(f"redis at {config.redis.url} unavailable: {exc}") from None
        except (BlockListFileError, OSError) as exc:
            raise BlockCommandError(str(exc)) from None


@asynccontextmanager
async def open_blocklist(config: Config) -> AsyncIterator[BlockList]:
    """The backend the server uses with this config: Redis when `[redis] url` is set, else the file."""
    if not config.redis.url:
        yield LocalBlockList(blocklist_path(config))
        return
    from redis.asyncio import Redis

    from filters.blocklist_redis import RedisBlockList

    client = Redis.from_url(config.redis.url, socket_connect_timeout=5.0, socket_timeout=5.0)
    try:
        yield RedisBlockList(client, config.filters.throttle.redis_key_prefix)
    finally:
        await client.aclose()


def _network(target: str) -> str:
    try:
        return parse_network(target)
    except ValueError:
        raise BlockCommandError(f"not an IP address or CIDR network: {target!r}") from None


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fail(message: str) -> int:
    print(f"postroom block: {message}", file=sys.stderr)
    return EXIT_ERROR
