"""Stopping a runner's work in flight: wait a bounded time, then cancel what is left.

A cancelled delivery leaves its message in active/, where start-up recovery finds it: nothing is lost, the
attempt is counted and made again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any


async def drain_tasks(tasks: Collection[asyncio.Task[Any]], timeout: float) -> None:
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5.0)  # let cancelled attempts run their cleanup
