"""Ticket building in a process pool, with a time limit per message.

The normaliser is linear in its input and bounded (docs/payload.md, "Guarantees"), but a message is the
internet's bytes: should one still take too long, it must not hold every large message queued behind it,
and a hung or killed worker must not stall the queue or take the runner down.

- At most as many messages are in the pool as it has workers, so the limit times a message's own work,
  never its wait in the pool's queue.
- A message that exceeds `timeout` seconds gets the fallback ticket (its header section only, the raw
  message kept, `parse_error` saying why; built here, cheaply), a `postroom_normalize_timeouts` count and
  an error log line. The pool's processes are killed and a new pool is made on the next message.
- Messages that were in that pool beside it are not to blame: each is built once more, in the new pool.
- A pool that broke by itself (a worker killed by the OOM killer, a crash) is replaced too; that message
  counts as a crash, as before (three, and it is moved to corrupt/).

Without a process pool (`normalize_workers = 0`) the message is built in a thread, which cannot be
stopped: the fallback ticket is delivered at the limit and the thread finishes in the background.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import BrokenExecutor, Executor, ProcessPoolExecutor
from typing import Protocol

from postroom.core.envelope import SpoolEnvelope

log = logging.getLogger("postroom.delivery")

# (raw, spool envelope, max inline attachment bytes, headers-only reason or None) → ticket JSON bytes.
BuildTicket = Callable[[bytes, SpoolEnvelope, int, str | None], bytes]


class TimeoutMetrics(Protocol):
    def normalize_timed_out(self) -> None: ...


class NormalizerPool:
    def __init__(
        self,
        build: BuildTicket,
        *,
        timeout: float,
        executor: Executor | None = None,
        executor_factory: Callable[[], Executor | None] | None = None,
        metrics: TimeoutMetrics | None = None,
    ) -> None:
        self.build = build
        self.timeout = timeout
        self.executor = executor
        self.executor_factory = executor_factory  # None when configured off: asyncio's default threads
        self.metrics = metrics
        self._slots: dict[int, asyncio.Semaphore] = {}  # per executor (by id): one message per worker
        self._killed: list[Executor] = []  # the last executors killed over another message's time

    async def build_body(
        self, raw: bytes, envelope: SpoolEnvelope, max_inline_attachment_bytes: int
    ) -> bytes:
        """The ticket body, or the fallback ticket after `timeout`. Raises what the build raised, or
        `BrokenExecutor` when the pool broke under this message (a new pool is ready for the next one)."""
        for _ in range(2):  # a second go only for a message whose pool was killed over another one
            executor = self._current()
            try:
                return await self._run(executor, raw, envelope, max_inline_attachment_bytes)
            except BrokenExecutor:
                if any(killed is executor for killed in self._killed):
                    continue
                self._replace(executor, "normaliser pool broke, starting a new one")
                raise
        raise BrokenExecutor("the normaliser pool was replaced twice under this message")

    async def _run(
        self, executor: Executor | None, raw: bytes, envelope: SpoolEnvelope, max_inline_attachment_bytes: int
    ) -> bytes:
        loop = asyncio.get_running_loop()
        async with self._slot(executor):
            future = loop.run_in_executor(
                executor, self.build, raw, envelope, max_inline_attachment_bytes, None
            )
            try:
                return await asyncio.wait_for(future, self.timeout)
            except TimeoutError:
                pass
        reason = f"normalisation timed out after {self.timeout:g} s: only the header section was read"
        log.error(
            "normalisation timed out: delivering the fallback ticket",
            extra={"event": "normalize_timeout", "queue_id": envelope.id, "timeout": self.timeout},
        )
        if self.metrics is not None:
            self.metrics.normalize_timed_out()
        if isinstance(executor, ProcessPoolExecutor):
            self._kill(executor)
        return await asyncio.to_thread(self.build, raw, envelope, max_inline_attachment_bytes, reason)

    def _current(self) -> Executor | None:
        if self.executor is None and self.executor_factory is not None:
            self.executor = self.executor_factory()  # made on first use: no idle worker sits in memory
        return self.executor

    def _slot(self, executor: Executor | None) -> asyncio.Semaphore:
        key = id(executor)
        if key not in self._slots:
            # Both executor classes keep their size here; the default thread pool is None: no queue limit.
            workers = getattr(executor, "_max_workers", None) if executor is not None else None
            self._slots[key] = asyncio.Semaphore(workers or 1_000_000)
        return self._slots[key]

    def _kill(self, executor: ProcessPoolExecutor) -> None:
        """A running task cannot be cancelled: its process is killed, with the pool it belongs to."""
        self._killed = [*self._killed[-7:], executor]
        processes = dict(getattr(executor, "_processes", None) or {})
        for process in processes.values():
            with contextlib.suppress(OSError, ValueError):  # already gone, or closed
                process.kill()
        self._replace(executor, "normaliser pool killed over a timed-out message, starting a new one")

    def _replace(self, executor: Executor | None, message: str) -> None:
        if self.executor is not executor:
            return  # already replaced by another message's failure
        log.error(message, extra={"event": "pool_restart"})
        self.executor = None  # the factory makes the next one on the next message
        self._slots.pop(id(executor), None)
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
