"""`postroom serve`: builds every part from the config, runs them, and stops them in order.

Start-up order: spool (and its recovery) → delivery runner → filters → SMTP listener, so that nothing is
acknowledged before the runner can deliver it. Shutdown reverses it: stop accepting (new sessions get 421),
let transactions in flight finish, then stop the runner, leaving undelivered mail spooled.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from filters.base import Verdict
from filters.blocklist import blocklist_path
from filters.chain import FilterChain
from filters.deps import FilterDeps
from filters.registry import build_links
from filters.resolver import make_resolver
from inbound.delivery.circuit import BackPressure
from inbound.delivery.runner import DeliveryRunner, RunnerLimits
from inbound.delivery.webhook import WebhookClient
from inbound.smtp.handler import InboundHandler
from inbound.smtp.listener import SmtpListener, load_tls_context
from inbound.smtp.routing import Router
from outbound.service import OutboundService
from postroom.app.config import Config, load_config
from postroom.app.ops_http import OpsServer
from postroom.app.readiness import dependency_checks, spool_check
from postroom.core.configload import ConfigError
from postroom.core.metrics import Metrics
from postroom.core.retry import RetrySchedule
from postroom.core.spool import Spool, open_spool

log = logging.getLogger("postroom.app")


def make_executor(workers: int) -> Executor | None:
    """A process pool for MIME parsing; None means asyncio's default thread pool."""
    if workers <= 0:
        return None
    # forkserver: never fork the event loop's process with its threads and sockets.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("forkserver"))


@dataclass
class Postroom:
    config: Config
    spool: Spool
    runner: DeliveryRunner
    handler: InboundHandler
    listener: SmtpListener
    webhook: WebhookClient
    executor: Executor | None
    metrics: Metrics
    outbound: OutboundService
    ops: OpsServer | None = None
    closers: list[Any] = field(default_factory=list)

    worker: int | None = None

    @classmethod
    async def build(cls, config: Config, *, worker: int | None = None) -> Postroom:
        """`worker`: this process's index under the supervisor (`[smtp] workers` > 1), else None."""
        spool = await asyncio.to_thread(open_spool, config.spool)
        metrics = Metrics(process_metrics=worker is None)
        metrics.watch_spool("inbound", spool)
        wh = config.webhook
        webhook = WebhookClient(
            wh.url,
            wh.secret,
            timeout=wh.timeout,
            max_response_bytes=wh.max_response_bytes,
            max_connections=wh.concurrency,
        )
        # Made on the first message big enough to need it (see DeliveryRunner): until then no forkserver,
        # resource tracker or worker process sits in memory (~13 MB each).
        executor = None
        spool_io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="postroom-spool")
        runner = DeliveryRunner(
            spool,
            webhook,
            RetrySchedule.from_config(wh),
            limits=RunnerLimits(
                concurrency=wh.concurrency,
                per_tenant_concurrency=wh.per_tenant_concurrency,
                rescan_interval=config.delivery.rescan_interval,
                max_inline_attachment_bytes=wh.max_inline_attachment_bytes,
                process_pool_min_bytes=config.delivery.process_pool_min_bytes,
                normalize_timeout=config.delivery.normalize_timeout,
            ),
            executor=executor,
            executor_factory=lambda: make_executor(config.delivery.normalize_workers),
            metrics=metrics,
            spool_io=spool_io,
            share=None if worker is None else (worker, config.smtp.workers),
        )
        closers: list[Any] = []
        redis_client = None
        if config.redis.url:
            import redis.asyncio

            # Bounded: a hung Redis must not hold a session's cleanup (session_closed) forever.
            redis_client = redis.asyncio.Redis.from_url(
                config.redis.url, socket_connect_timeout=2.0, socket_timeout=2.0
            )
            closers.append(redis_client.aclose)
        deps = FilterDeps(
            resolver=make_resolver(config.dns), hostname=config.smtp.hostname, redis=redis_client
        )
        # The running server and `postroom block` must use the same block-list file.
        config.filters.throttle.blocklist_file = str(blocklist_path(config))
        chain = FilterChain(build_links(config.filters, deps), on_verdict=_verdict_metrics(metrics))
        await chain.start()  # e.g. DNSBL zone health checks, before the first connection
        closers.append(chain.aclose)
        # One relay per node: its per-destination limits and its queue are not shared between workers.
        outbound = OutboundService(
            config,
            resolver=deps.resolver,
            redis=redis_client,
            metrics=metrics,
            on_delivery=metrics.outbound_delivery,
            relay=worker in (None, 0),
        )
        router = Router.from_files(config.routing.domains, config.routing.tenant_file)
        pressure = None
        if config.backpressure.enabled:
            # Per-tenant back-pressure: fed by the listener's 250s and the runner's outcomes, asked at RCPT.
            pressure = BackPressure(config.backpressure, spool, redis=redis_client)
            runner.on_outcome = pressure.outcome
            await pressure.start()
            closers.append(pressure.stop)
        handler = InboundHandler(
            config,
            spool=spool,
            router=router,
            chain=chain,
            on_queued=runner.wake if pressure is None else pressure.counting(runner.wake),
            metrics=metrics,
            tenant_gate=None if pressure is None else pressure.admits,
            spool_io=spool_io,
            bounces=outbound.bounces,
        )
        tls = None
        if config.smtp.tls_cert:
            tls = load_tls_context(config.smtp.tls_cert, config.smtp.tls_key)
        listener = SmtpListener(config, handler, tls_context=tls)
        ops = None
        if config.metrics.listen and worker is None:  # under a supervisor, the supervisor serves it
            ops = OpsServer(config.metrics.listen, metrics, [spool_check(spool), *dependency_checks(config)])
        closers.append(_async_shutdown(spool_io))
        parts = (runner, handler, listener, webhook, executor, metrics, outbound, ops, closers, worker)
        return cls(config, spool, *parts)

    async def start(self) -> None:
        if self.ops is not None:
            await self.ops.start()
        await self.runner.start()
        await self.outbound.start()
        await self.listener.start(reuse_port=self.worker is not None)
        log.info(
            "postroom started",
            extra={
                "event": "started",
                "worker": self.worker,
                "listen": self.config.smtp.listen,
                "spool": str(self.spool.root),
                "filters": [f.name for f in self.handler.chain.filters],
            },
        )

    async def stop(self) -> None:
        """New sessions get 421 while transactions in flight finish (bounded), then the runner stops."""
        if self.ops is not None:
            self.ops.set_draining()
        self.handler.accepting = False
        await self._drain_sessions(self.config.delivery.shutdown_grace)
        await self.listener.stop()
        await self.outbound.stop(timeout=self.config.delivery.shutdown_grace)
        await self.runner.stop(timeout=self.config.delivery.shutdown_grace)
        await self.webhook.aclose()
        for closer in reversed(self.closers):
            try:
                await closer()
            except Exception:
                log.exception("error while closing")
        if self.runner.executor is not None:  # the runner may have replaced a broken pool
            self.runner.executor.shutdown(wait=False, cancel_futures=True)
        if self.ops is not None:
            await self.ops.stop()
        log.info("postroom stopped", extra={"event": "stopped"})

    async def _drain_sessions(self, grace: float) -> None:
        """Wait (bounded) for open SMTP sessions: a transaction in DATA finishes and gets its 250."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.handler.sessions > 0 and loop.time() < deadline:
            self.handler.close_idle_sessions()
            await asyncio.sleep(0.05)

    def reload(self, config: Config) -> None:
        """SIGHUP: apply what can change without dropping connections; name what needs a restart."""
        self.handler.router = Router.from_files(config.routing.domains, config.routing.tenant_file)
        from postroom.app.logsetup import configure_logging

        configure_logging(config)
        unchanged = [
            name
            for name in (
                "smtp",
                "spool",
                "webhook",
                "delivery",
                "filters",
                "redis",
                "metrics",
                "dns",
                "backpressure",
            )
            if getattr(config, name) != getattr(self.config, name)
        ]
        self.config.routing = config.routing
        self.config.logging = config.logging
        log.info("configuration reloaded", extra={"event": "reloaded", "needs_restart": unchanged})


def _verdict_metrics(metrics: Metrics) -> Callable[[Verdict], None]:
    def record(verdict: Verdict) -> None:
        metrics.filter_checked(verdict.filter, verdict.stage, verdict.result, verdict.ms / 1000.0)
        if verdict.filter == "throttle" and verdict.result == "fail":
            metrics.throttle_hit(verdict.reason.removeprefix("throttle."))

    return record


def _reloader(app: Postroom, config_path: str) -> Callable[[], None]:
    def reload() -> None:
        try:
            app.reload(load_config(config_path))
        except (ConfigError, OSError, ValueError) as exc:
            log.error(
                "reload refused, keeping the running configuration",
                extra={"event": "reload_failed", "error": str(exc)},
            )

    return reload


def _async_shutdown(pool: ThreadPoolExecutor) -> Any:
    async def close() -> None:
        await asyncio.to_thread(pool.shutdown, wait=True)

    return close


async def serve(
    config: Config,
    *,
    config_path: str | None = None,
    ready: asyncio.Event | None = None,
    worker: int | None = None,
) -> None:
    """Run until SIGTERM/SIGINT; SIGHUP re-reads `config_path` (routing, tenant list, logging)."""
    loop = asyncio.get_running_loop()
    # Filters run blocking libraries (pyspf, dkimpy) in the default pool; each check is time-bounded.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="postroom-filter"))
    app = await Postroom.build(config, worker=worker)
    await app.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if config_path is not None:
        loop.add_signal_handler(signal.SIGHUP, _reloader(app, config_path))
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down", extra={"event": "stopping"})
        await app.stop()
