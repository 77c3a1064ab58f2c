"""The runner under load: a 2,000-message burst within exact limits, and kill -9 in the middle of one."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from filters.resolver import make_resolver
from outbound.runner import OutboundRunner
from outbound.suppression import open_suppression
from postroom.app.config import config_from_mapping
from postroom.core.spool import ACTIVE, CORRUPT, DEFERRED, INCOMING
from tests.outbound.delivery_fixtures import (
    MX_BURST,
    MX_CRASH,
    MX_WIDE,
    MxFarm,
    delivery_settings,
    outbound_entry,
    outbound_spool,
    wait_for,
)
from tests.servers.dns import DnsServer

REPO = Path(__file__).resolve().parents[2]
SEQ = re.compile(rb"^X-Test-Seq: (\d+)\r?$", re.MULTILINE)


def sequence_numbers(farm: MxFarm, mx: str) -> list[int]:
    numbers = []
    for received in farm.at(mx):
        found = SEQ.search(received.data)
        assert found is not None
        numbers.append(int(found.group(1)))
    return numbers


async def test_burst_of_2000_never_exceeds_the_configured_concurrency(
    tmp_path: Path, dns_server: DnsServer, mx_farm: MxFarm
) -> None:
    settings = delivery_settings(
        tmp_path,
        dns_server,
        mx_farm.port,
        concurrency=12,  # global cap, below the two destinations' 5 + 20
        destination_concurrency=20,
        max_messages_per_connection=20,
        destinations={"burst.dest.test": {"concurrency": 5}},
    )
    cfg = config_from_mapping(settings)
    spool = outbound_spool(cfg)
    runner = OutboundRunner(
        cfg, spool=spool, suppression=open_suppression(cfg, None), resolver=make_resolver(cfg.dns)
    )
    mx_farm.delay = 0.002  # each DATA takes a moment, so sessions overlap as they would on a real network
    entries = [outbound_entry([f"user{i}@{('burst', 'wide')[i % 2]}.dest.test"], seq=i) for i in range(2000)]
    await asyncio.to_thread(spool.store, entries)
    started = time.perf_counter()
    await runner.start()
    try:
        await wait_for(lambda: len(mx_farm.received) >= 2000, timeout=90, interval=0.05)
        elapsed = time.perf_counter() - started
        await wait_for(lambda: not any(spool.ids(s) for s in (INCOMING, ACTIVE, DEFERRED)), timeout=10)
    finally:
        await runner.stop(timeout=5.0)
    burst, wide = mx_farm.meters[MX_BURST], mx_farm.meters[MX_WIDE]
    print(
        f"\n2000 messages in {elapsed:.2f} s ({2000 / elapsed:.0f} msg/s); peak connections: "
        f"burst.dest.test {burst.peak}/5, wide.dest.test {wide.peak}/20, all {mx_farm.everything.peak}/12"
    )
    assert sorted(sequence_numbers(mx_farm, MX_BURST) + sequence_numbers(mx_farm, MX_WIDE)) == list(
        range(2000)
    )
    assert burst.peak == 5  # reached, never exceeded
    assert mx_farm.everything.peak == 12  # the global cap binds the wide destination
    assert wide.peak <= 12


async def test_kill_9_mid_burst_loses_nothing(tmp_path: Path, dns_server: DnsServer, mx_farm: MxFarm) -> None:
    total = 1000
    settings = delivery_settings(
        tmp_path,
        dns_server,
        mx_farm.port,
        concurrency=8,
        destination_concurrency=8,
        max_messages_per_connection=10,
    )
    cfg = config_from_mapping(settings)
    spool = outbound_spool(cfg)
    await asyncio.to_thread(
        spool.store, [outbound_entry([f"u{i}@crash.dest.test"], seq=i) for i in range(total)]
    )
    mx_farm.delay = 0.01
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.outbound.outbound_runner_process", json.dumps(settings)],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    try:
        await wait_for(lambda: len(mx_farm.at(MX_CRASH)) >= 300, timeout=30)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    in_flight = len(spool.ids(ACTIVE))
    still_queued = len(spool.ids(INCOMING)) + len(spool.ids(DEFERRED))
    assert in_flight > 0 and still_queued > 0  # the kill really hit the middle of the burst

    runner = OutboundRunner(
        cfg, spool=spool, suppression=open_suppression(cfg, None), resolver=make_resolver(cfg.dns)
    )
    await runner.start()
    try:
        await wait_for(lambda: not any(spool.ids(s) for s in (INCOMING, ACTIVE, DEFERRED)), timeout=60)
    finally:
        await runner.stop(timeout=5.0)
    received = sequence_numbers(mx_farm, MX_CRASH)
    assert set(received) == set(range(total))  # nothing lost
    assert len(received) - total <= in_flight  # duplicates only for what was in flight
    assert spool.ids(CORRUPT) == []
