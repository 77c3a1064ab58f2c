"""Runs an OutboundRunner in its own process until killed: the subject of the kill -9 test.

Usage: python -m tests.outbound.outbound_runner_process '<settings as JSON>'
Prints "started" once the runner is running.
"""

from __future__ import annotations

import asyncio
import json
import sys

from filters.resolver import make_resolver
from outbound.runner import OutboundRunner
from outbound.suppression import open_suppression
from postroom.app.config import config_from_mapping
from tests.outbound.delivery_fixtures import outbound_spool


async def run(settings: dict[str, object]) -> None:
    cfg = config_from_mapping(settings)
    runner = OutboundRunner(
        cfg,
        spool=outbound_spool(cfg),
        suppression=open_suppression(cfg, None),
        resolver=make_resolver(cfg.dns),
    )
    await runner.start()
    print("started", flush=True)
    await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(run(json.loads(sys.argv[1])))
