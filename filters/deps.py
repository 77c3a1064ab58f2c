"""What filters get injected instead of reaching for globals: resolver, shared state, clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dns.asyncresolver


@dataclass
class FilterDeps:
    """Built once at start-up by the listener and handed to every filter factory.

    `resolver` honours `[dns] nameservers` (host:port). `redis` is a `redis.asyncio.Redis` when `[redis] url`
    is set, else None (in-process state). `hostname` is this MX's name, for Authentication-Results.
    """

    resolver: dns.asyncresolver.Resolver
    hostname: str
    redis: Any | None = None
    clock: Callable[[], float] = field(default=time.time)
    monotonic: Callable[[], float] = field(default=time.monotonic)
