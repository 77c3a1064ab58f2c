"""`[smtp] workers` > 1: a supervisor and N worker processes sharing the SMTP port and the spool.

One Python process tops out at one core (the GIL), and Postroom's work per message is CPU: the SMTP
dialogue, filters, normalising, signing, the webhook exchange. So, as Postfix runs many smtpd processes,
`serve` can run several workers. Each is a whole pipeline — listener bound with SO_REUSEPORT, so the kernel
spreads connections over them, and a delivery runner — over the one spool:

- A message's claim is a rename into active/ under an flock held for the attempt (postroom.core.spool), so
  workers never deliver the same message at once, and a worker that dies leaves locks the kernel releases.
- The supervisor runs the full start-up recovery before any worker starts. A worker (re)started later only
  requeues attempts whose lock is gone: those of the worker it replaces.
- The outbound relay (submission listener, queue runner) runs in worker 0 only: its per-destination limits
  are process state. Every worker takes bounces at the MX.
- Counters are summed through prometheus-client's multiprocess files; the supervisor serves `[metrics]
  listen` (/metrics, /healthz, /readyz), with its own readiness check that every worker is running.

In-process state — throttle windows, per-IP session caps, back-pressure circuits — is per worker, as it is
per node; with `[redis] url` set the throttle and circuits are shared, exactly as across nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field

from postroom.app.config import Config
from postroom.app.readiness import CheckResult, ReadinessCheck, dependency_checks, spool_check
from postroom.core.spool import Spool, open_spool

log = logging.getLogger("postroom.workers")

WORKER_ENV = "POSTROOM_WORKER"  # "<index>:<supervisor pid>", set by the supervisor for each worker
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PR_SET_PDEATHSIG = 1  # prctl(2)
# A worker that dies sooner than this after its start is crash-looping: wait longer before the next start.
STABLE_AFTER = 10.0
MAX_RESTART_DELAY = 30.0


def worker_index() -> int | None:
    """This process's worker index when a supervisor started it, else None."""
    value = os.environ.get(WORKER_ENV)
    if not value:
        return None
    index, _, supervisor = value.partition(":")
    _die_with_supervisor(int(supervisor))
    return int(index)


def _die_with_supervisor(supervisor_pid: int) -> None:
    """SIGTERM (a graceful drain) when the supervisor goes away, even by SIGKILL: no orphaned workers."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != supervisor_pid:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Worker:
    index: int
    process: asyncio.subprocess.Process | None = None
    started_at: float = 0.0
    restart_delay: float = 0.5  # doubled before the first restart when the worker died young
    restarts: int = 0
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    watcher: asyncio.Task[None] | None = None


class Supervisor:
    def __init__(self, config: Config, config_path: str, metrics_dir: str) -> None:
        self.config = config
        self.config_path = config_path
        self.metrics_dir = metrics_dir
        self.workers = [Worker(i) for i in range(config.smtp.workers)]
        self.stopping = False

    async def start_worker(self, worker: Worker) -> None:
        env = {
            **os.environ,
            WORKER_ENV: f"{worker.index}:{os.getpid()}",
            MULTIPROC_ENV: self.metrics_dir,
        }
        worker.exited.clear()
        worker.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "postroom.app.cli", "serve", "--config", self.config_path, env=env
        )
        worker.started_at = time.monotonic()
        log.info(
            "worker started",
            extra={"event": "worker_started", "worker": worker.index, "pid": worker.process.pid},
        )
        worker.watcher = asyncio.create_task(
            self._watch(worker, worker.process), name=f"postroom-worker-{worker.index}"
        )

    async def _watch(self, worker: Worker, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        _forget_dead_process(self.metrics_dir, process.pid)
        worker.exited.set()
        if self.stopping:
            return
        ran = time.monotonic() - worker.started_at
        crash_looping = ran < STABLE_AFTER
        worker.restart_delay = min(worker.restart_delay * 2, MAX_RESTART_DELAY) if crash_looping else 1.0
        log.error(
            "worker exited, starting it again",
            extra={
                "event": "worker_exited",
                "worker": worker.index,
                "pid": process.pid,
                "exit": _describe_exit(code),
                "restart_in": worker.restart_delay,
            },
        )
        await asyncio.sleep(worker.restart_delay)
        if not self.stopping:
            worker.restarts += 1
            await self.start_worker(worker)

    def signal_all(self, sig: signal.Signals) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(sig)

    async def stop(self, grace: float) -> None:
        """SIGTERM every worker (each drains like a single `serve`); SIGKILL what outlives the grace."""
        self.stopping = True
        self.signal_all(signal.SIGTERM)
        waits = [w.exited.wait() for w in self.workers if w.process is not None]
        try:
            async with asyncio.timeout(grace):
                await asyncio.gather(*waits)
        except TimeoutError:
            log.error("workers did not stop in time, killing them", extra={"event": "worker_killed"})
            self.signal_all(signal.SIGKILL)
            await asyncio.gather(*(w.exited.wait() for w in self.workers if w.process is not None))
        for worker in self.workers:  # a watcher may be waiting out a restart delay
            if worker.watcher is not None and worker.watcher is not asyncio.current_task():
                worker.watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker.watcher

    def readiness_check(self) -> ReadinessCheck:
        async def check() -> CheckResult:
            down = [w.index for w in self.workers if w.process is None or w.process.returncode is not None]
            if down:
                return "workers", False, f"not running: {', '.join(map(str, down))}"
            return "workers", True, f"{len(self.workers)} running"

        return check


def _forget_dead_process(directory: str, pid: int) -> None:
    """Drop a dead worker's live gauges (open sessions); its counters stay in the sums."""
    from prometheus_client import multiprocess

    with contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]


def _describe_exit(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


async def supervise(config: Config, config_path: str, *, ready: asyncio.Event | None = None) -> None:
    """Run N workers until SIGTERM/SIGINT; SIGHUP is passed on to every worker (each reloads its config)."""
    from postroom.app.ops_http import OpsServer
    from postroom.core.metrics import MergedMetrics

    spool = await asyncio.to_thread(open_spool, config.spool)
    await asyncio.to_thread(spool.recover)  # before any worker: nothing can be in flight yet
    metrics_dir = tempfile.mkdtemp(prefix="postroom-metrics-")
    supervisor = Supervisor(config, config_path, metrics_dir)
    ops = None
    if config.metrics.listen:
        metrics = MergedMetrics(metrics_dir)
        metrics.watch_spool("inbound", spool)
        if config.outbound.enabled or config.submission.enabled:
            outbound_spool = Spool(config.outbound.spool_dir(config.spool.path)).create()
            metrics.watch_spool("outbound", outbound_spool)
        checks = [spool_check(spool), *dependency_checks(config), supervisor.readiness_check()]
        ops = OpsServer(config.metrics.listen, metrics, checks)
        await ops.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, supervisor.signal_all, signal.SIGHUP)
    try:
        for worker in supervisor.workers:
            await supervisor.start_worker(worker)
        log.info(
            "supervisor started",
            extra={"event": "started", "workers": len(supervisor.workers), "listen": config.smtp.listen},
        )
        if ready is not None:
            ready.set()
        await stop.wait()
    finally:
        log.info("shutting down workers", extra={"event": "stopping"})
        if ops is not None:
            ops.set_draining()
        await supervisor.stop(grace=config.delivery.shutdown_grace * 2 + 10)
        if ops is not None:
            await ops.stop()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        log.info("supervisor stopped", extra={"event": "stopped"})
