"""The throttle's counters in Redis/Valkey, so several Postroom nodes enforce one global limit.

Each operation is one Lua script, atomic on the server: a check-then-record over several keys can't
interleave with another node's. Windows are sorted sets of event times (a sliding log, like the in-process
store); slots are sorted sets of holders scored by lease expiry. Times come from the caller's clock, so nodes
need NTP-synchronised clocks (milliseconds of skew don't matter for minute windows).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from filters.throttle_store import RateLimit, StoreUnavailable

# KEYS: one sorted set per limit. ARGV: now, member, then limit and window (seconds) for each key.
# Returns 0 when admitted (recorded under every key), else the 1-based index of the first full limit.
_ADMIT = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[1 + 2 * i])
  local window = tonumber(ARGV[2 + 2 * i])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) >= limit then
    return i
  end
end
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[2 + 2 * i])
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('PEXPIRE', key, math.ceil(window * 1000))
end
return 0
"""

# KEYS: the sorted set. ARGV: now, member, window. Returns the number of events in the window.
_COUNT = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000))
return redis.call('ZCARD', KEYS[1])
"""

# KEYS: the slot set. ARGV: now, holder, limit, lease. Returns 1 when the holder has a slot.
_ACQUIRE = """
local now = tonumber(ARGV[1])
local lease = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[2]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + lease, ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000))
return 1
"""


class RedisThrottleStore:
    """`ThrottleStore` on a shared Redis; every Redis or network error becomes `StoreUnavailable`."""

    def __init__(self, redis: Redis, key_prefix: str = "postroom:throttle:") -> None:
        self.redis = redis
        self.prefix = key_prefix
        # Slot holders are session ids, unique only within one process: qualify them with this node's id.
        self.node = uuid.uuid4().hex[:12]
        self._admit = redis.register_script(_ADMIT)
        self._count = redis.register_script(_COUNT)
        self._acquire = redis.register_script(_ACQUIRE)

    async def admit(self, limits: Sequence[RateLimit], now: float) -> RateLimit | None:
        if not limits:
            return None
        args: list[str | float] = [repr(now), self._member(now)]
        for limit in limits:
            args += [limit.limit, repr(limit.window)]
        full = int(await self._run(self._admit, [self.prefix + limit.key for limit in limits], args))
        return limits[full - 1] if full else None

    async def count(self, key: str, window: float, now: float) -> int:
        args = [repr(now), self._member(now), repr(window)]
        return int(await self._run(self._count, [self.prefix + key], args))

    async def acquire_slot(self, key: str, holder: str, limit: int, lease: float, now: float) -> bool:
        args: list[str | float] = [repr(now), self._holder(holder), limit, repr(lease)]
        return int(await self._run(self._acquire, [self.prefix + key], args)) == 1

    async def release_slot(self, key: str, holder: str) -> None:
        try:
            await self.redis.zrem(self.prefix + key, self._holder(holder))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    async def _run(self, script: AsyncScript, keys: list[str], args: Sequence[str | float]) -> Any:
        try:
            return await script(keys=keys, args=list(args))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc

    def _member(self, now: float) -> str:
        """A unique sorted-set member per event (two events at the same instant must both count)."""
        return f"{now!r}:{self.node}:{uuid.uuid4().hex[:12]}"

    def _holder(self, holder: str) -> str:
        return f"{self.node}:{holder}"
