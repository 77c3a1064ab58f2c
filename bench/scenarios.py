"""The measurements, each against a started system: throughput, latency at a fixed rate, the spool.

Every scenario sends its own messages (own sequence range, so markers never collide), resets the receiver,
and waits — bounded — until the receiver holds every ticket whose message got a 2xx, or until arrivals stall.
Whatever never arrives is `lost`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bench.loadgen import LoadResult, LoadSpec, MessageRecord, run_load
from bench.messages import MessageFactory
from bench.procstat import TreeMonitor, machine_busy_seconds
from bench.stats import latency_ms
from bench.systems import HOST, REPO, System


class ReceiverProcess:
    """bench.receiver in its own process, driven over its stdin/stdout line protocol."""

    def __init__(self, secret: str, port: int) -> None:
        self.secret = secret
        self.port = port
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/tickets"

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.receiver", "--port", str(self.port), "--secret", self.secret,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, cwd=REPO,
            limit=64 * 1024 * 1024,  # `dump` answers with one long line
        )  # fmt: skip
        ready = await self._read()
        self.port = int(ready["port"])

    async def _read(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if not line:
            raise RuntimeError("the bench receiver exited")
        result: dict[str, Any] = json.loads(line)
        return result

    async def command(self, name: str) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{name}\n".encode())
        await self.proc.stdin.drain()
        return await self._read()

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"quit\n")
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@dataclass
class Delivery:
    arrivals: dict[str, float]  # marker -> arrival (monotonic)
    lost: list[str]  # accepted markers that never arrived
    duplicates: int
    bad_signature: int
    t_last: float  # the last arrival, or 0.0


async def await_delivery(
    receiver: ReceiverProcess, accepted: list[MessageRecord], *, stall: float, cap: float
) -> Delivery:
    """Poll until every accepted marker arrived, nothing new came for `stall` seconds, or `cap` passed."""
    wanted = len(accepted)
    # Markers of one phase share everything but their last six digits (see bench.main.SEQ_BLOCK).
    prefix = accepted[0].marker[:-6] if accepted else "-"
    deadline = time.monotonic() + cap
    seen, last_change = -1, time.monotonic()
    while time.monotonic() < deadline:
        stats = await receiver.command(f"stats {prefix}")
        if stats["matching"] >= wanted:
            break
        if stats["matching"] != seen:
            seen, last_change = stats["matching"], time.monotonic()
        elif time.monotonic() - last_change > stall:
            break
        await asyncio.sleep(0.05)
    dump = await receiver.command("dump")
    arrivals = {marker: float(value[0]) for marker, value in dump.items()}
    lost = [r.marker for r in accepted if r.marker not in arrivals]
    return Delivery(
        arrivals,
        lost,
        int(stats["duplicates"]),
        int(stats["bad_signature"]),
        max(arrivals.values(), default=0.0),
    )


def delivery_latency(accepted: list[MessageRecord], delivery: Delivery) -> dict[str, float | None]:
    waits = [delivery.arrivals[r.marker] - r.t_reply for r in accepted if r.marker in delivery.arrivals]
    return latency_ms(waits, (50, 99))


@dataclass
class Settings:
    sessions: int
    per_session: int
    stall: float = 30.0  # give up waiting for tickets after this long without a new one
    cap: float = 900.0  # and after this long in all


async def measure_load(
    system: System,
    receiver: ReceiverProcess,
    factory: MessageFactory,
    settings: Settings,
    *,
    messages: int,
    first_seq: int,
    rate: float | None,
    daemon_pids: Sequence[int] = (),
) -> dict[str, Any]:
    """One load phase: send, wait for every ticket, and account CPU over exactly that span.

    Besides the server's own tree: the scanner daemons it calls (Rspamd, clamd: `daemon_pids`) and the
    whole machine, load generator and receiver included — what is left of the cores tells whether the
    machine, not the server, is the limit.
    """
    await receiver.command("reset")
    monitor = TreeMonitor(system.root_pid)
    daemons = [TreeMonitor(pid) for pid in daemon_pids]
    cpu_start = monitor.cpu()
    daemons_start = sum(d.cpu() for d in daemons)
    machine_start = machine_busy_seconds()
    spec = LoadSpec(
        HOST, system.port, messages, settings.sessions, settings.per_session, rate, first_seq=first_seq,
        deadline=settings.cap,
    )  # fmt: skip
    load = await run_load(spec, factory)
    accepted = load.accepted
    figures: dict[str, Any] = load.summary()
    if system.delivers:
        delivery = await await_delivery(receiver, accepted, stall=settings.stall, cap=settings.cap)
        t_end = max(delivery.t_last, load.t_end)
        figures["delivery_latency_ms"] = delivery_latency(accepted, delivery)
        figures["delivered"] = len(accepted) - len(delivery.lost)
        figures["lost"] = len(delivery.lost)
        figures["lost_sample"] = delivery.lost[:5]
        figures["duplicates"] = delivery.duplicates
        figures["bad_signature"] = delivery.bad_signature
    else:
        t_end = load.t_end
        figures["delivered"] = len(accepted)
        figures["lost"] = 0
    cpu = monitor.cpu() - cpu_start
    daemons_cpu = sum(d.cpu() for d in daemons) - daemons_start
    machine_cpu = machine_busy_seconds() - machine_start
    elapsed = t_end - load.t_start
    figures["end_to_end_s"] = round(elapsed, 3)
    figures["msgs_per_s"] = round(figures["delivered"] / elapsed, 1) if elapsed > 0 else None
    figures["cpu_s"] = round(cpu, 3)
    figures["cpu_s_per_1000"] = round(cpu / len(accepted) * 1000, 3) if accepted else None
    if daemons and accepted:
        figures["daemons_cpu_s_per_1000"] = round(daemons_cpu / len(accepted) * 1000, 3)
    if elapsed > 0:
        figures["machine_cores_busy"] = round(machine_cpu / elapsed, 2)
    return figures


async def measure_spool(
    system: System, receiver: ReceiverProcess, factory: MessageFactory, settings: Settings, *, messages: int
) -> dict[str, Any]:
    """Receiver down: fill the spool; peak RSS; receiver up: how fast it drains, and is anything lost."""
    await receiver.command("reset")
    await receiver.command("down")
    monitor = TreeMonitor(system.root_pid)
    monitor.start()
    try:
        spec = LoadSpec(
            HOST, system.port, messages, settings.sessions, settings.per_session, deadline=settings.cap
        )
        load: LoadResult = await run_load(spec, factory)
        accepted = load.accepted
        await asyncio.sleep(2.0)  # let the runner fail its first attempts: the backlog is now "deferred"
        rss_spooled = monitor.peak_rss_mb
        t_up = time.monotonic()
        await receiver.command("up")
        delivery = await await_delivery(receiver, accepted, stall=settings.stall, cap=settings.cap)
    finally:
        await monitor.stop()
        await receiver.command("up")
    drained = len(accepted) - len(delivery.lost)
    first = min(delivery.arrivals.values(), default=t_up)
    return {
        "messages": messages,
        "accepted": len(accepted),
        "refused": load.summary()["refusals"],
        "accept_per_s": load.summary()["accepted_per_s"],
        "peak_rss_mb_spooled": rss_spooled,
        "peak_rss_mb": monitor.peak_rss_mb,
        "drain_s": round(delivery.t_last - t_up, 3) if drained else None,
        "drain_msgs_per_s": round(drained / (delivery.t_last - t_up), 1) if drained else None,
        # From the first ticket after the restart: leaves out the wait for the next retry tick.
        "drain_msgs_per_s_from_first": round(drained / (delivery.t_last - first), 1) if drained > 1 else None,
        "first_ticket_after_s": round(first - t_up, 3) if drained else None,
        "lost": len(delivery.lost),
        "lost_sample": delivery.lost[:5],
        "duplicates": delivery.duplicates,
    }
