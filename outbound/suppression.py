"""The suppression list: addresses Postroom must not send to, each with an optional expiry.

Hard bounces and complaints add entries (for `[outbound] suppression_ttl`); operators add and remove them
with `postroom suppression`. Submission refuses a suppressed recipient at RCPT (550 5.1.1); delivery skips
it.

Addresses are stored with the domain lowercased (surrounding <> and a trailing dot removed) and the local part
as given, but compared case-insensitively as a whole: RFC 5321 allows case-sensitive local parts, yet
practically no mailbox provider has them, and a suppression should err towards not sending.

Two backends: `MemorySuppressionList` (one node; persisted to a JSON file) and `RedisSuppressionList` (shared
by several nodes). `open_suppression` picks Redis when a client is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import orjson

if TYPE_CHECKING:
    from outbound.config import RelaySettings

log = logging.getLogger("postroom.outbound.suppression")

SUPPRESSION_FILE = "suppression.json"
REDIS_BATCH = 500
T = TypeVar("T")


class SuppressionError(Exception):
    """The list cannot be read or written (unreadable file, Redis down): a temporary failure."""


@dataclass
class SuppressionEntry:
    address: str
    reason: str
    source: str  # who added it: "bounce", "complaint", "cli", ...
    created_at: float
    expires_at: float | None  # None: until removed

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SuppressionEntry:
        expires = data.get("expires_at")
        return cls(
            address=str(data["address"]),
            reason=str(data.get("reason", "")),
            source=str(data.get("source", "")),
            created_at=float(data["created_at"]),
            expires_at=None if expires is None else float(expires),
        )


class SuppressionList(Protocol):
    async def add(self, address: str, *, reason: str, source: str, ttl: float | None) -> None:
        """Suppress `address` for `ttl` seconds (None: until removed); replaces an existing entry."""

    async def remove(self, address: str) -> bool:
        """Lift a suppression; False when there was none."""

    async def lookup(self, address: str) -> SuppressionEntry | None:
        """The live entry for `address`, or None."""

    async def entries(self) -> list[SuppressionEntry]:
        """Every live entry, oldest first."""


def normalize_address(address: str) -> str:
    """`address` as stored: domain lowercased, local part kept. ValueError when it is not an address."""
    address = address.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    local, at, domain = address.rpartition("@")
    domain = domain.rstrip(".").lower()
    if not at or not local or not domain or any(ch.isspace() for ch in address):
        raise ValueError(f"not an email address: {address!r}")
    return f"{local}@{domain}"


def suppression_key(address: str) -> str:
    """The comparison key: the whole normalised address, case-folded."""
    return normalize_address(address).lower()


def new_entry(address: str, *, reason: str, source: str, ttl: float | None, now: float) -> SuppressionEntry:
    if ttl is not None and ttl <= 0:
        raise ValueError("ttl must be positive (None: until removed)")
    expires_at = None if ttl is None else now + ttl
    return SuppressionEntry(normalize_address(address), reason, source, now, expires_at)


class MemorySuppressionList:
    """The list in memory, persisted to a JSON file that the CLI and a running server share.

    Every change is a read-modify-write under an exclusive lock on `<file>.lock`, written to a temporary file,
    fsynced and renamed over the old one, so a reader never sees half a file and no change is lost when two
    processes write at once. Each call first reloads the file if it was replaced since the last read (cheap:
    one stat).
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._entries: dict[str, SuppressionEntry] = {}
        self._stamp: tuple[int, int, int] | None = None

    async def add(self, address: str, *, reason: str, source: str, ttl: float | None) -> None:
        entry = new_entry(address, reason=reason, source=source, ttl=ttl, now=self.clock())

        def put(entries: dict[str, SuppressionEntry]) -> None:
            entries[suppression_key(address)] = entry

        await asyncio.to_thread(self._update, put)
        log.info("address suppressed", extra={"address": entry.address, "reason": reason, "source": source})

    async def remove(self, address: str) -> bool:
        key = suppression_key(address)

        def drop(entries: dict[str, SuppressionEntry]) -> bool:
            return entries.pop(key, None) is not None

        removed = await asyncio.to_thread(self._update, drop)
        if removed:
            log.info("suppression removed", extra={"address": normalize_address(address)})
        return removed

    async def lookup(self, address: str) -> SuppressionEntry | None:
        await self._refresh()
        entry = self._entries.get(suppression_key(address))
        return None if entry is None or entry.expired(self.clock()) else entry

    async def entries(self) -> list[SuppressionEntry]:
        await self._refresh()
        now = self.clock()
        return sorted((e for e in self._entries.values() if not e.expired(now)), key=lambda e: e.created_at)

    async def _refresh(self) -> None:
        if self._file_stamp() != self._stamp:
            await asyncio.to_thread(self._load)

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SuppressionError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _load(self) -> None:
        # Runs in a worker thread: the loop only ever sees a complete dict, swapped in whole.
        self._entries, self._stamp = self._read_file()

    def _read_file(self) -> tuple[dict[str, SuppressionEntry], tuple[int, int, int] | None]:
        stamp = self._file_stamp()
        if stamp is None:
            return {}, None
        try:
            data = orjson.loads(self.path.read_bytes())
            entries = [SuppressionEntry.from_dict(item) for item in data["entries"]]
        except OSError as exc:
            raise SuppressionError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise SuppressionError(f"{self.path} is not a valid suppression file: {exc}") from exc
        return {suppression_key(e.address): e for e in entries}, stamp

    def _update(self, change: Callable[[dict[str, SuppressionEntry]], T]) -> T:
        """Apply `change` to the current file contents and write the result (blocking, in a thread)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            entries, _ = self._read_file()
            result = change(entries)
            now = self.clock()
            live = {k: e for k, e in entries.items() if not e.expired(now)}
            self._write(live)
            self._entries, self._stamp = live, self._file_stamp()
            return result

    def _write(self, entries: dict[str, SuppressionEntry]) -> None:
        body = orjson.dumps(
            {"version": 1, "entries": [e.as_dict() for e in entries.values()]}, option=orjson.OPT_INDENT_2
        )
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with open(tmp, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise SuppressionError(f"cannot write {self.path}: {exc.strerror or exc}") from exc


class RedisSuppressionList:
    """The list in Redis, shared by every node: one key per address, expiring with Redis's own TTL.

    `<prefix>entry:<address>` holds the entry as JSON; the sorted set `<prefix>index` lists the addresses by
    expiry time (+inf for permanent) so `entries` can enumerate them without SCAN and drop stale members.
    """

    def __init__(
        self, redis: Any, *, prefix: str = "postroom:suppression:", clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.clock = clock
        self._index = f"{prefix}index"

    def _key(self, key: str) -> str:
        return f"{self.prefix}entry:{key}"

    async def add(self, address: str, *, reason: str, source: str, ttl: float | None) -> None:
        entry = new_entry(address, reason=reason, source=source, ttl=ttl, now=self.clock())
        key = suppression_key(address)
        ttl_ms = None if ttl is None else max(1, round(ttl * 1000))
        score = math.inf if entry.expires_at is None else entry.expires_at
        async with self._errors(), self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key(key), orjson.dumps(entry.as_dict()), px=ttl_ms)
            pipe.zadd(self._index, {key: score})
            await pipe.execute()
        log.info("address suppressed", extra={"address": entry.address, "reason": reason, "source": source})

    async def remove(self, address: str) -> bool:
        key = suppression_key(address)
        async with self._errors(), self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._key(key))
            pipe.zrem(self._index, key)
            deleted, _ = await pipe.execute()
        if deleted:
            log.info("suppression removed", extra={"address": normalize_address(address)})
        return bool(deleted)

    async def lookup(self, address: str) -> SuppressionEntry | None:
        async with self._errors():
            value = await self.redis.get(self._key(suppression_key(address)))
        if value is None:
            return None
        entry = SuppressionEntry.from_dict(orjson.loads(value))
        return None if entry.expired(self.clock()) else entry

    async def entries(self) -> list[SuppressionEntry]:
        now = self.clock()
        found: list[SuppressionEntry] = []
        async with self._errors():
            await self.redis.zremrangebyscore(self._index, "-inf", now)
            keys = [
                k.decode() if isinstance(k, bytes) else k for k in await self.redis.zrange(self._index, 0, -1)
            ]
            for start in range(0, len(keys), REDIS_BATCH):
                values = await self.redis.mget([self._key(k) for k in keys[start : start + REDIS_BATCH]])
                found.extend(SuppressionEntry.from_dict(orjson.loads(v)) for v in values if v is not None)
        return sorted((e for e in found if not e.expired(now)), key=lambda e: e.created_at)

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        # Imported here, as redis.asyncio is by the app: ~14 MB (with the cryptography it loads) that a node
        # without [redis] url never needs.
        from redis.exceptions import RedisError

        try:
            yield
        except RedisError as exc:
            raise SuppressionError(f"suppression list in Redis unavailable: {exc}") from exc


def open_suppression(cfg: RelaySettings, redis: Any | None) -> SuppressionList:
    """Redis-backed when a `redis.asyncio.Redis` client is given, else the JSON file in the outbound spool."""
    if redis is not None:
        return RedisSuppressionList(redis)
    return MemorySuppressionList(cfg.outbound.spool_dir(cfg.spool.path) / SUPPRESSION_FILE)
