"""The block-list in Redis, shared by every Postroom node and edited by `postroom block` from anywhere.

Entries live in one hash (network → JSON entry) next to a version counter bumped on every change. A lookup
costs one GET of the version; the hash is re-read only when the version moved, so a `block add` on one node
takes effect on all nodes at their next connection.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from filters.blocklist import BlockEntry, BlockIndex
from filters.throttle_store import StoreUnavailable

log = logging.getLogger("postroom.filters.blocklist")
_NEVER_LOADED = object()


class RedisBlockList:
    def __init__(self, redis: Redis, key_prefix: str = "postroom:throttle:") -> None:
        self.redis = redis
        self.entries_key = f"{key_prefix}blocklist"
        self.version_key = f"{key_prefix}blocklist:version"
        self._index = BlockIndex()
        self._version: object = _NEVER_LOADED

    async def add(self, entry: BlockEntry) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.entries_key, entry.network, json.dumps(entry.as_dict()))
            pipe.incr(self.version_key)
            await self._execute(pipe)

    async def remove(self, network: str) -> bool:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hdel(self.entries_key, network)
            pipe.incr(self.version_key)
            removed, _ = await self._execute(pipe)
        return bool(removed)

    async def entries(self, now: float) -> list[BlockEntry]:
        await self._refresh()
        live = self._index.live(now)
        expired = [net for net in self._index.by_network if net not in {e.network for e in live}]
        if expired:  # listing is the housekeeping moment; lookups never write
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self.entries_key, *expired)
                pipe.incr(self.version_key)
                await self._execute(pipe)
        return live

    async def lookup(self, ip: str, now: float) -> BlockEntry | None:
        await self._refresh()
        return self._index.find(ip, now)

    async def _refresh(self) -> None:
        try:
            version = await self.redis.get(self.version_key)
            if version == self._version:
                return
            raw = await self.redis.hgetall(self.entries_key)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        self._index = BlockIndex(_decode_valid(raw))
        self._version = version

    async def _execute(self, pipe: Any) -> list[Any]:
        try:
            return list(await pipe.execute())
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc


def _decode_valid(raw: dict[Any, Any]) -> list[BlockEntry]:
    """Decoded entries; one bad value (a hand edit) is logged and skipped, never fatal for every client."""
    entries = []
    for network, value in raw.items():
        try:
            entries.append(BlockEntry.from_dict(json.loads(value)))
        except (KeyError, TypeError, ValueError) as exc:
            log.error(
                "bad block-list entry in redis skipped",
                extra={"event": "blocklist_error", "network": str(network), "error": str(exc)},
            )
    return entries
