"""CPU time and memory of a server's whole process tree, read from /proc (Linux only, no psutil needed).

A server is its main process plus every descendant (Postfix: master, smtpd, cleanup, qmgr, pipe and the pipe
scripts; Postroom: one process, or several workers). CPU seconds are summed over the live tree including each
process's cutime/cstime, i.e. children it has already reaped, so short-lived pipe scripts are counted once
their parent has waited for them. Memory is sampled: the peak of the sum of VmHWM (each process's own
high-water mark) over the processes alive at a sample — exact for a single process, an upper bound otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces; fields resume after the last ')'.
    return data[data.rfind(")") + 2 :].split()


def tree(root: int) -> list[int]:
    """root and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime + cutime + cstime of these processes, in seconds."""
    ticks = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            # After the ')' field 0 is state, so utime (14th field of the whole line) is index 11.
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (everything but idle and iowait), from /proc/stat."""
    with open("/proc/stat", "rb") as fh:
        fields = [int(v) for v in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLK_TCK


def status_kb(pid: int, key: str) -> int:
    """A 'kB' line of /proc/<pid>/status (VmHWM, VmRSS); 0 when gone or absent (kernel threads, zombies)."""
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", "rb") as fh:
        prefix = key.encode() + b":"
        for line in fh:
            if line.startswith(prefix):
                return int(line.split()[1])
    return 0


@dataclass
class TreeMonitor:
    """Samples a process tree in the background: peak memory and process count."""

    root: int
    interval: float = 0.2
    peak_hwm_kb: int = 0
    peak_processes: int = 0
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    def sample(self) -> None:
        pids = tree(self.root)
        self.peak_processes = max(self.peak_processes, len(pids))
        self.peak_hwm_kb = max(self.peak_hwm_kb, sum(status_kb(pid, "VmHWM") for pid in pids))

    def cpu(self) -> float:
        return cpu_seconds(tree(self.root))

    def reset_peak(self) -> None:
        """VmHWM cannot be reset from outside; this only forgets earlier samples of the sum."""
        self.peak_hwm_kb = 0
        self.sample()

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            self.sample()

    @property
    def peak_rss_mb(self) -> float:
        return round(self.peak_hwm_kb / 1024, 1)
