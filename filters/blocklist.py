"""The dynamic block-list: client IPs and networks refused at connect until their entry expires.

Entries come from `postroom block add` and from the throttle's auto-block (repeated refusals). Two backends
behind `BlockList`: `LocalBlockList` (in-process, persisted in `<spool>/blocklist.json` that the CLI edits and
the server reloads when it changes) and `RedisBlockList` (filters/blocklist_redis.py, shared by all nodes).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import ipaddress
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from filters.config import FilterSettings

log = logging.getLogger("postroom.filters.blocklist")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
FILE_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class BlockEntry:
    network: str  # normalised: "127.0.0.66/32", "2001:db8::/48"
    reason: str
    expires_at: float  # epoch seconds
    created_at: float
    source: str = "manual"  # "manual" (CLI) or "auto" (repeated refusals)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BlockEntry:
        return cls(
            network=parse_network(str(data["network"])),
            reason=str(data.get("reason", "")),
            expires_at=float(data["expires_at"]),
            created_at=float(data.get("created_at", 0.0)),
            source=str(data.get("source", "manual")),
        )


def blocklist_path(config: FilterSettings) -> Path:
    """The in-process backend's file: `[filters.throttle] blocklist_file`, else `<spool>/blocklist.json`.

    The server and `postroom block` must agree on it: the listener passes this path to the throttle.
    """
    return Path(config.filters.throttle.blocklist_file or Path(config.spool.path) / "blocklist.json")


def parse_network(text: str) -> str:
    """'192.0.2.7' → '192.0.2.7/32'; '192.0.2.7/24' → '192.0.2.0/24'. ValueError if neither."""
    return str(ipaddress.ip_network(text.strip(), strict=False))


# Cached: the throttle asks at every stage of every message, and parsing each time showed in the profile.
@functools.lru_cache(maxsize=4096)
def client_address(ip: str) -> IPAddress:
    """The peer address as the block-list sees it: IPv4-mapped IPv6 (dual-stack sockets) becomes IPv4."""
    address = ipaddress.ip_address(ip)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class BlockIndex:
    """Entries keyed by network, looked up by one dict probe per prefix length in use (not a scan)."""

    def __init__(self, entries: Iterable[BlockEntry] = ()) -> None:
        self.by_network = {entry.network: entry for entry in entries}
        self._prefixes = {
            version: sorted(
                {int(net.rsplit("/", 1)[1]) for net in self.by_network if (":" in net) == (version == 6)},
                reverse=True,
            )
            for version in (4, 6)
        }

    def find(self, ip: str, now: float) -> BlockEntry | None:
        """The most specific unexpired entry covering `ip`."""
        try:
            address = client_address(ip)
        except ValueError:
            return None
        for prefix in self._prefixes[address.version]:
            network = str(ipaddress.ip_network((address, prefix), strict=False))
            entry = self.by_network.get(network)
            if entry is not None and entry.expires_at > now:
                return entry
        return None

    def live(self, now: float) -> list[BlockEntry]:
        return sorted((e for e in self.by_network.values() if e.expires_at > now), key=lambda e: e.network)


class BlockList(Protocol):
    async def add(self, entry: BlockEntry) -> None:
        """Add or replace the entry for `entry.network`."""
        ...

    async def remove(self, network: str) -> bool:
        """Remove the entry for a normalised network; False if there was none."""
        ...

    async def entries(self, now: float) -> list[BlockEntry]:
        """Unexpired entries, sorted by network."""
        ...

    async def lookup(self, ip: str, now: float) -> BlockEntry | None:
        """The unexpired entry covering the client address, if any."""
        ...


class LocalBlockList:
    """In-process block-list, optionally persisted in a JSON file shared with `postroom block`.

    Writes take an flock on `<file>.lock` and replace the file atomically (write, fsync, rename, fsync dir),
    so the CLI and a running server never lose each other's updates. Reads reload the file when its
    identity (inode, size, mtime) changed: one stat() per connection, no polling task.
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._index = BlockIndex()
        self._stamp: tuple[int, int, int] | None = None

    async def add(self, entry: BlockEntry) -> None:
        await self._update(lambda entries: {**entries, entry.network: entry})

    async def remove(self, network: str) -> bool:
        removed = False

        def drop(entries: dict[str, BlockEntry]) -> dict[str, BlockEntry]:
            nonlocal removed
            removed = entries.pop(network, None) is not None
            return entries

        await self._update(drop)
        return removed

    async def entries(self, now: float) -> list[BlockEntry]:
        self._reload_if_changed()
        return self._index.live(now)

    async def lookup(self, ip: str, now: float) -> BlockEntry | None:
        self._reload_if_changed()
        return self._index.find(ip, now)

    async def _update(self, change: Callable[[dict[str, BlockEntry]], dict[str, BlockEntry]]) -> None:
        if self.path is None:
            self._index = BlockIndex(change(dict(self._index.by_network)).values())
            return
        await asyncio.to_thread(self._update_file, change)

    def _update_file(self, change: Callable[[dict[str, BlockEntry]], dict[str, BlockEntry]]) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            current = {entry.network: entry for entry in read_entries(self.path)}
            updated = change(current)
            write_entries(self.path, updated.values())
            self._index = BlockIndex(updated.values())
            self._stamp = _file_stamp(self.path)

    def _reload_if_changed(self) -> None:
        if self.path is None:
            return
        stamp = _file_stamp(self.path)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._index = BlockIndex(read_entries(self.path))
        except BlockListFileError as exc:
            # A bad hand edit must not refuse every client: keep the last good list and say so once.
            log.error("block-list file not reloaded", extra={"event": "blocklist_error", "error": str(exc)})


def _file_stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def read_entries(path: Path) -> list[BlockEntry]:
    """The file's entries; a missing file is an empty list, a corrupt one an error naming the file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        raise BlockListFileError(f"{path}: unreadable block-list: {exc}") from None
    try:
        return [BlockEntry.from_dict(item) for item in data["entries"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise BlockListFileError(f"{path}: malformed block-list entry: {exc}") from None


def write_entries(path: Path, entries: Iterable[BlockEntry]) -> None:
    body = {
        "version": FILE_FORMAT_VERSION,
        "entries": [e.as_dict() for e in sorted(entries, key=lambda e: e.network)],
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(body, out, indent=2)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class BlockListFileError(Exception):
    """The block-list file exists but cannot be used."""
