"""The outbound relay as one part of `postroom serve`: submission listener, delivery runner, bounce intake.

Each piece runs only when configured: `[submission] enabled` (the helpdesk hands notifications to us),
`[outbound] enabled` (we deliver them) and `[outbound] bounce_domain` (VERP bounces come back to the inbound
MX and update the suppression list instead of becoming tickets). They share one outbound spool and one
suppression list (Redis-backed when `[redis] url` is set).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import dns.asyncresolver

from outbound.bounce_intake import BounceProcessor
from outbound.config import RelaySettings
from outbound.runner import OutboundRunner
from outbound.submission import SubmissionServer
from outbound.suppression import SuppressionList, open_suppression
from postroom.core.spool import Spool

log = logging.getLogger("postroom.outbound.service")


class OutboundService:
    def __init__(
        self,
        config: RelaySettings,
        *,
        resolver: dns.asyncresolver.Resolver,
        redis: Any | None = None,
        metrics: Any | None = None,
        on_delivery: Callable[[str, str], None] | None = None,
        relay: bool = True,
    ) -> None:
        """`relay=False`: bounce intake only (a worker other than the one that runs the relay).

        `on_delivery(domain, outcome)` hears every recipient's settled outcome (the serve wiring counts them).
        """
        self.config = config
        self.runner: OutboundRunner | None = None
        self.submission: SubmissionServer | None = None
        self.bounces: BounceProcessor | None = None
        if not (config.outbound.enabled or config.submission.enabled or config.outbound.bounce_domain):
            return  # inbound only: no outbound spool directory, no suppression file
        self.spool = Spool(config.outbound.spool_dir(config.spool.path)).create()
        self.suppression: SuppressionList = open_suppression(config, redis)
        if config.outbound.enabled and relay:
            self.runner = OutboundRunner(
                config,
                spool=self.spool,
                suppression=self.suppression,
                resolver=resolver,
                on_result=on_delivery,
            )
        if config.submission.enabled and relay:
            self.submission = SubmissionServer(
                config, spool=self.spool, suppression=self.suppression, metrics=metrics
            )
            if self.runner is not None:
                runner = self.runner
                self.submission.on_queued = lambda _ids: runner.wake()
        if config.outbound.bounce_domain:
            self.bounces = BounceProcessor(
                bounce_domain=config.outbound.bounce_domain,
                # The same key the runner's VERP return paths are made with.
                secret=config.outbound.verp_secret,
                suppression=self.suppression,
                suppression_ttl=config.outbound.suppression_ttl,
            )
        if metrics is not None and (self.runner is not None or self.submission is not None):
            metrics.watch_spool("outbound", self.spool)

    @property
    def active(self) -> bool:
        return self.runner is not None or self.submission is not None

    async def start(self) -> None:
        if self.runner is not None:
            await self.runner.start()
        if self.submission is not None:
            await self.submission.start()
            log.info(
                "submission listening", extra={"event": "started", "listen": self.config.submission.listen}
            )

    async def stop(self, timeout: float) -> None:
        if self.submission is not None:
            await self.submission.stop()
        if self.runner is not None:
            await asyncio.wait_for(self.runner.stop(timeout=timeout), timeout=timeout + 10)
