"""The queue runner both delivery runners are built on: find work in a spool, dispatch it fairly, stop.

A subclass says how an entry is grouped (`key_of`: the tenant inbound, the destination domain outbound), how
many workers a group may have at once (`worker_limit`) and what a worker does (`work`: take entries from its
group's ready queue, claim them with `claim`, deliver, then `forget` or `defer` each). The template owns:

- start-up recovery (all of active/ when the spool is this process's alone, only abandoned attempts when
  sibling workers share it: their flock(2) tells a live attempt from a dead one), then a scan of the disk;
- the in-memory index: a ready queue per group, the deferred entries by due time (a heap), and the set of
  ids queued, in flight or watched, so no entry is attempted twice at once by this process;
- the loop: release what is due, dispatch round-robin over groups within the global and per-group limits,
  rescan the disk every `rescan_interval` or on `request_scan` (replays from the CLI, other writers),
  sweep tmp/ of what an interrupted store left, and sleep until woken or until the next entry is due;
- a graceful stop: no new work, attempts in flight finish (bounded), everything else stays spooled.

A worker task takes `batch_size` ready entries (one inbound, a connection's worth outbound), attempts them
and exits; the loop then dispatches again, so a busy group never holds a slot another group waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
import zlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from postroom.core.spool import DEFERRED, INCOMING, STALE_TMP_SECONDS, Claim, NotDue, Spool, SpoolError
from postroom.core.taskdrain import drain_tasks

log = logging.getLogger("postroom.queuerunner")
T = TypeVar("T")


@dataclass(frozen=True)
class QueueLimits:
    concurrency: int | None = None  # workers in flight over all groups; None: only the per-group limits
    rescan_interval: float = 2.0
    tmp_sweep_interval: float = 300.0  # how often tmp/ is swept (Spool.remove_stale_tmp)
    stale_tmp_age: float = STALE_TMP_SECONDS


class QueueRunner(ABC):
    def __init__(
        self,
        spool: Spool,
        *,
        limits: QueueLimits,
        name: str,
        clock: Callable[[], float] = time.time,
        spool_io: Executor | None = None,
        share: tuple[int, int] | None = None,
    ) -> None:
        self.spool = spool
        self.queue_limits = limits
        self.clock = clock
        self.spool_io = spool_io  # threads for spool file work (None: the loop's default executor)
        # (this worker's index, number of workers) when sibling processes use the same spool: at start only
        # abandoned attempts are recovered, and a rescan takes only this worker's share of what it finds.
        self.share = share
        self._name = name
        self._ready: dict[str, deque[str]] = {}
        self._known: set[str] = set()  # ids queued in memory, in flight or deferred: never attempted twice
        self._deferred: list[tuple[float, str, str]] = []  # (due, queue id, group)
        self._workers: dict[str, int] = {}
        self._workers_total = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._wakeup = asyncio.Event()
        self._scan_wanted = False
        self._main: asyncio.Task[None] | None = None
        self._stopping = False

    # ---- hooks --------------------------------------------------------------------------------------------

    @abstractmethod
    def key_of(self, meta: dict[str, Any]) -> str:
        """The group (tenant, destination domain) of an entry, from its stored envelope."""

    @abstractmethod
    def worker_limit(self, key: str) -> int:
        """How many workers group `key` may have at once."""

    def batch_size(self, key: str) -> int:
        """How many ready entries one worker of group `key` takes."""
        return 1

    @abstractmethod
    async def work(self, key: str, batch: list[str]) -> None:
        """Attempt `batch` (ids of group `key`), then `forget` or `defer` each id."""

    # ---- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.io(self.spool.recover if self.share is None else self.spool.recover_abandoned)
        await self._scan()
        self._main = asyncio.create_task(self._run(), name=self._name)

    async def stop(self, timeout: float = 30.0) -> None:
        """Stop taking new work, let work in flight finish (bounded), leave everything else spooled."""
        self._stopping = True
        self._wakeup.set()
        if self._main is not None:
            await self._main
        await drain_tasks(self._tasks, timeout)

    def enqueue(self, queued: Sequence[tuple[str, str]]) -> None:
        """New entries in incoming/, as (queue id, group) pairs: attempt them now."""
        for queue_id, key in queued:
            self._enqueue(queue_id, key)
        self._wakeup.set()

    def request_scan(self) -> None:
        """Something was written to the spool: look at the disk now rather than at the next rescan."""
        self._scan_wanted = True
        self._wakeup.set()

    @property
    def idle(self) -> bool:
        """Nothing in memory waiting or in flight (deferred entries may still be due later)."""
        return not self._tasks and not any(self._ready.values())

    async def io(self, func: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.spool_io, func, *args)

    # ---- helpers for `work` -------------------------------------------------------------------------------

    def claim(self, queue_id: str) -> Claim | NotDue | None:
        """Take an entry into active/ under an exclusive lock (blocking: call it through `io`)."""
        return self.spool.claim(queue_id, now=self.clock())

    def forget(self, queue_id: str) -> None:
        """The entry left the queue (or someone else has it): a later scan may find it afresh."""
        self._known.discard(queue_id)

    def defer(self, queue_id: str, key: str, due: float) -> None:
        """Attempt the entry again at `due` (it may be a new entry that replaced the one attempted)."""
        self._known.add(queue_id)
        heapq.heappush(self._deferred, (due, queue_id, key))
        self._wakeup.set()

    def reserve(self, queue_id: str) -> None:
        """An id about to be written by this process: no scan may pick it up before `defer` does."""
        self._known.add(queue_id)

    def is_mine(self, queue_id: str) -> bool:
        """Workers split what a rescan finds by id, so each indexes and retries only its share (claims make
        a double attempt impossible anyway; this keeps N workers from each holding the whole deferred
        queue in memory). What a worker's own listener queued reaches it through `enqueue`, whoever's."""
        if self.share is None:
            return True
        index, count = self.share
        return zlib.crc32(queue_id.encode()) % count == index

    # ---- scheduling ---------------------------------------------------------------------------------------

    def _enqueue(self, queue_id: str, key: str) -> None:
        if queue_id in self._known:
            return
        self._known.add(queue_id)
        self._ready.setdefault(key, deque()).append(queue_id)

    async def _scan(self) -> None:
        """Pick up what is on disk but not in memory: start-up, replays from the CLI, other writers."""
        found = await self.io(self._scan_disk, frozenset(self._known))
        for state, queue_id, key, due in found:
            if queue_id in self._known:
                continue  # claimed or rewritten while the scan ran
            if state == INCOMING:
                self._enqueue(queue_id, key)
            else:
                self.defer(queue_id, key, due)

    def _scan_disk(self, known: frozenset[str]) -> list[tuple[str, str, str, float]]:
        found = []
        for state in (INCOMING, DEFERRED):
            for queue_id in self.spool.ids(state):
                if queue_id in known or not self.is_mine(queue_id):
                    continue
                try:
                    key = self.key_of(self.spool.read_meta(state, queue_id))
                except OSError:
                    continue  # moved meanwhile: the next scan sees where it went
                except (SpoolError, ValueError):
                    key = ""  # unreadable: its claim moves it to corrupt/
                due = 0.0
                if state == DEFERRED:
                    due = self.spool.load_state(queue_id).next_attempt_at or 0.0
                found.append((state, queue_id, key, due))
        return found

    async def _sweep_tmp(self) -> None:
        try:
            await self.io(self.spool.remove_stale_tmp, self.queue_limits.stale_tmp_age)
        except OSError as exc:  # tmp/ unreadable: the next sweep tries again; delivery goes on meanwhile
            log.warning("cannot sweep the spool's tmp/", extra={"error": str(exc), "runner": self._name})

    async def _run(self) -> None:
        limits = self.queue_limits
        last_scan = last_sweep = self.clock()
        while not self._stopping:
            self._wakeup.clear()
            now = self.clock()
            while self._deferred and self._deferred[0][0] <= now:
                _, queue_id, key = heapq.heappop(self._deferred)
                self._ready.setdefault(key, deque()).append(queue_id)
            self._dispatch()
            if now - last_sweep >= limits.tmp_sweep_interval:
                last_sweep = now
                await self._sweep_tmp()
            if self._scan_wanted or now - last_scan >= limits.rescan_interval:
                self._scan_wanted = False
                last_scan = now
                try:
                    await self._scan()
                except (OSError, SpoolError):
                    log.exception("cannot scan the spool", extra={"runner": self._name})
                self._dispatch()
            timeout = limits.rescan_interval
            if self._deferred:
                timeout = min(timeout, max(0.0, self._deferred[0][0] - now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout=max(timeout, 0.01))

    def _dispatch(self) -> None:
        """Start workers round-robin over groups, within the global and per-group limits."""
        if self._stopping:
            return
        cap = self.queue_limits.concurrency
        progressed = True
        while progressed and (cap is None or self._workers_total < cap):
            progressed = False
            for key in list(self._ready):
                ready = self._ready[key]
                if not ready:
                    del self._ready[key]
                    continue
                if self._workers.get(key, 0) >= self.worker_limit(key):
                    continue
                if cap is not None and self._workers_total >= cap:
                    break
                batch = [ready.popleft() for _ in range(min(len(ready), self.batch_size(key)))]
                self._workers[key] = self._workers.get(key, 0) + 1
                self._workers_total += 1
                task = asyncio.create_task(self.work(key, batch), name=f"{self._name}:{key}")
                self._tasks.add(task)
                task.add_done_callback(self._worker_done(key))
                progressed = True

    def _worker_done(self, key: str) -> Callable[[asyncio.Task[None]], None]:
        def done(task: asyncio.Task[None]) -> None:
            self._tasks.discard(task)
            self._workers[key] -= 1
            self._workers_total -= 1
            if not task.cancelled() and task.exception() is not None:
                log.error(
                    "queue work failed unexpectedly",
                    exc_info=task.exception(),
                    extra={"runner": self._name, "key": key},
                )
            self._wakeup.set()

        return done
