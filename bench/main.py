"""bench/run: start every system on loopback, measure it with the same load and receiver, write the results.

For each load shape (--shapes: `one` message per SMTP connection, as real MX traffic arrives, and `many`,
--per-session messages per connection), each system (and, for Postroom, each filter profile) is started
afresh and measured in this order:
  warm-up (not measured) → throughput (closed loop, --messages) → latency at --rate msgs/s (open loop,
  --rate-messages). Last of all, for Postroom, a fresh process for the spool scenario (--spool-messages).
Postfix + pipe script starts a Python interpreter per message, so it gets its own, smaller message counts
(--postfix-messages, --postfix-rate-messages) to keep the run short; its rates do not depend on the count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import process, profiling, report
from bench.haraka import Haraka
from bench.loadgen import DEFAULT_SOURCES, install_uvloop
from bench.messages import DEFAULT_MIX, HELO, MessageFactory, Mix
from bench.postfix import Postfix
from bench.postroom_config import FILTER_NAMES, PROFILES, UNLIMITED
from bench.procstat import TreeMonitor
from bench.rounds import median_round
from bench.scenarios import ReceiverProcess, Settings, measure_load, measure_spool
from bench.services import profile_services
from bench.systems import Context, NullAiosmtpd, Postroom, SmtpSink, System

SYSTEMS: dict[str, type[System]] = {
    "postroom": Postroom,
    "postfix": Postfix,
    "haraka": Haraka,
    "aiosmtpd": NullAiosmtpd,
    "smtp-sink": SmtpSink,
}
BASELINE_ORDER = ("smtp-sink", "aiosmtpd", "haraka", "postfix")
# Load shapes: messages per SMTP connection (None: --per-session). `one` is an MX's real traffic, one message
# per connection as `smtp-source -s 10 -m N` sends it; `many` keeps connections open for several.
SHAPES: dict[str, int | None] = {"one": 1, "many": None}
SEQ_BLOCK = 1_000_000  # each phase numbers its messages from its own block, so markers never collide

# (full, quick) defaults: a full run takes about 5-10 minutes on 2 cores, --quick about one.
DEFAULTS = {
    "messages": (5000, 2000),
    "rate_messages": (3000, 500),
    "spool_messages": (20000, 3000),
    "postfix_messages": (600, 150),
    "postfix_rate_messages": (600, 150),
    "warmup": (200, 50),
}


@dataclass
class Plan:
    systems: list[str]
    profiles: list[str]
    messages: int
    sessions: int
    per_session: int
    mix: str
    rate: float
    rate_messages: int
    spool_messages: int
    spool_profile: str
    postfix_messages: int
    postfix_rate_messages: int
    warmup: int
    without: tuple[str, ...]
    stall: float
    max_minutes: float
    workers: int
    rounds: int
    shapes: list[str]

    def session_length(self, shape: str) -> int:
        """Messages per SMTP connection in `shape`."""
        return SHAPES[shape] or self.per_session


def parse_args(argv: list[str] | None) -> tuple[Plan, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n")[0])
    parser.add_argument("--systems", default="postroom,haraka,postfix,aiosmtpd,smtp-sink")
    parser.add_argument(
        "--profile", default="none,cheap,all", help="Postroom filter profiles: none,cheap,all"
    )
    parser.add_argument("--messages", type=int, help="closed-loop throughput run (full 5000, quick 2000)")
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument(
        "--per-session", type=int, default=20, help="messages per SMTP connection in the `many` shape"
    )
    parser.add_argument(
        "--shapes",
        default="one,many",
        help="load shapes, in this order: one (1 message per connection), many (--per-session each)",
    )
    parser.add_argument("--mix", default=DEFAULT_MIX, help="size classes, e.g. small:80,medium:15,attach:5")
    parser.add_argument("--rate", type=float, default=100.0, help="offered msgs/s for the latency run")
    parser.add_argument(
        "--rate-messages", type=int, help="messages in the latency run (full 3000, quick 500)"
    )
    parser.add_argument("--spool-messages", type=int, help="spool scenario size, 0 to skip (full 20000)")
    parser.add_argument("--spool-profile", default="none", help="the profile the spool scenario runs with")
    parser.add_argument("--postfix-messages", type=int, help="Postfix's throughput run (full 600)")
    parser.add_argument("--postfix-rate-messages", type=int, help="Postfix's latency run (full 600)")
    parser.add_argument("--warmup", type=int, help="unmeasured messages before each system's runs")
    parser.add_argument(
        "--without",
        default="",
        help=f"Postroom filters to force off, e.g. throttle ({', '.join(FILTER_NAMES)})",
    )
    parser.add_argument(
        "--stall", type=float, default=30.0, help="stop waiting for tickets after this idle time"
    )
    parser.add_argument("--max-minutes", type=float, default=45.0, help="hard limit for the whole run")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="Postroom's [smtp] workers (default: one per core, the recommended setting)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure every system this many times, interleaved, and report each one's median round",
    )
    parser.add_argument("--quick", action="store_true", help="small counts: about a minute")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--py-spy", action="store_true", help="profile Postroom in an extra, unmeasured run")
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (configs, logs, spools)")
    args = parser.parse_args(argv)
    pick = 1 if args.quick else 0
    values = {
        name: getattr(args, name) if getattr(args, name) is not None else d[pick]
        for name, d in DEFAULTS.items()
    }
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    profiles = [p.strip() for p in args.profile.split(",") if p.strip()]
    for name in systems:
        if name not in SYSTEMS:
            parser.error(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for shape in shapes:
        if shape not in SHAPES:
            parser.error(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    if not shapes or len(set(shapes)) != len(shapes):
        parser.error("--shapes: one or more of one,many, each once")
    for profile in profiles:
        if profile not in PROFILES:
            parser.error(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    Mix.parse(args.mix)
    without = tuple(f.strip() for f in args.without.split(",") if f.strip())
    for name in without:
        if name not in FILTER_NAMES:
            parser.error(f"unknown filter {name!r}; choose from {', '.join(FILTER_NAMES)}")
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if max(values.values()) >= SEQ_BLOCK:
        parser.error(f"message counts must be below {SEQ_BLOCK:,}")
    plan = Plan(
        systems, profiles, values["messages"], args.sessions, args.per_session, args.mix, args.rate,
        values["rate_messages"], values["spool_messages"], args.spool_profile, values["postfix_messages"],
        values["postfix_rate_messages"], values["warmup"], without, args.stall, args.max_minutes,
        args.workers, args.rounds, shapes,
    )  # fmt: skip
    return plan, args


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, plan: Plan, ctx: Context, receiver: ReceiverProcess) -> None:
        self.plan = plan
        self.ctx = ctx
        self.receiver = receiver
        self.token = secrets.token_hex(2)
        self.runs = 0
        self.settings = Settings(plan.sessions, plan.per_session, stall=plan.stall)  # `many`: spool, py-spy
        self.py_spy: Path | None = None  # where py-spy's output goes, when profiling

    def factory(self) -> MessageFactory:
        self.runs += 1
        return MessageFactory(f"{self.token}{self.runs}", Mix.parse(self.plan.mix))

    async def measure(self, name: str, profile: str, shape: str = "many") -> dict[str, Any]:
        plan = self.plan
        settings = Settings(plan.sessions, plan.session_length(shape), stall=plan.stall)
        system = SYSTEMS[name](self.ctx, profile)
        label = f"[{name}/{profile}/{shape}]"
        log(f"{label} starting")
        await system.start()
        monitor = TreeMonitor(system.root_pid)
        monitor.start()
        try:
            factory = self.factory()
            postfix = name == "postfix"
            counts = (
                (plan.postfix_messages, plan.postfix_rate_messages)
                if postfix
                else (plan.messages, plan.rate_messages)
            )
            if plan.warmup:
                warm = min(plan.warmup, max(10, counts[0] // 10))
                await measure_load(
                    system, self.receiver, factory, settings, messages=warm, first_seq=0, rate=None
                )
            log(
                f"{label} throughput: {counts[0]} messages, {plan.sessions} sessions, "
                f"{settings.per_session} per connection"
            )
            scanners = self.ctx.services.daemon_pids if name == "postroom" and profile == "all" else []
            thr = await measure_load(
                system,
                self.receiver,
                factory,
                settings,
                messages=counts[0],
                first_seq=SEQ_BLOCK,
                rate=None,
                daemon_pids=scanners,
            )
            log(
                f"{label}   {thr['msgs_per_s']} msgs/s end to end, "
                f"{thr['cpu_s_per_1000']} CPU s/1000, lost {thr['lost']}"
            )
            log(f"{label} latency: {counts[1]} messages at {plan.rate:g}/s")
            lat = await measure_load(
                system, self.receiver, factory, settings, messages=counts[1], first_seq=2 * SEQ_BLOCK,
                rate=plan.rate,
            )  # fmt: skip
            log(f"{label}   accept {lat['accept_latency_ms']} delivery {lat.get('delivery_latency_ms')}")
            await monitor.stop()  # the profiling phase below must not count towards peak RSS
            samples = (
                await self.profile(system, factory, label) if self.py_spy and name == "postroom" else None
            )
        finally:
            await monitor.stop()
            await system.stop()
        return {
            "system": name,
            "profile": profile,
            "shape": shape,
            "per_session": settings.per_session,
            "version": system.version(),
            "msgs_per_s": thr["msgs_per_s"],
            "accept_latency_ms": lat["accept_latency_ms"],
            "delivery_latency_ms": lat.get("delivery_latency_ms"),
            "cpu_s_per_1000": thr["cpu_s_per_1000"],
            "daemons_cpu_s_per_1000": thr.get("daemons_cpu_s_per_1000"),
            "machine_cores_busy": thr.get("machine_cores_busy"),
            "peak_rss_mb": monitor.peak_rss_mb,
            "lost": thr["lost"] + lat["lost"],
            "throughput": thr,
            "fixed_rate": lat,
            **({"py_spy": samples} if samples else {}),
        }

    async def profile(self, system: System, factory: MessageFactory, label: str) -> dict[str, object]:
        """A further, unmeasured closed-loop run with py-spy attached: where the server's CPU goes."""
        assert self.py_spy is not None
        out = self.py_spy / f"py-spy-{system.profile}.txt"
        log(f"{label} profiling with py-spy: {self.plan.messages} messages -> {out}")
        recorder = profiling.start(system.root_pid, out, system.dir / "py-spy.log")
        try:
            await measure_load(
                system, self.receiver, factory, self.settings, messages=self.plan.messages,
                first_seq=3 * SEQ_BLOCK, rate=None,
            )  # fmt: skip
        finally:
            await profiling.stop(recorder)
        if not out.exists():
            raise RuntimeError(f"py-spy wrote nothing: {process.tail(system.dir / 'py-spy.log')}")
        return {"file": out.name, **profiling.summarize(out, top=60)}

    async def spool(self, profile: str) -> dict[str, Any]:
        system = Postroom(self.ctx, f"{profile}-spool")
        system.profile = profile
        # Postroom answers 451 at RCPT once a tenant has 1,000 messages queued behind a failing webhook (its
        # protection in production); the scenario wants the whole backlog in the spool, so it lifts the cap.
        system.overrides = {"backpressure": {"max_queued": UNLIMITED}}
        label = f"[postroom/{profile}]"
        log(f"{label} spool: receiver down, {self.plan.spool_messages} messages")
        await system.start()
        try:
            result = await measure_spool(
                system, self.receiver, self.factory(), self.settings, messages=self.plan.spool_messages
            )
        finally:
            await system.stop()
        log(
            f"{label}   peak RSS {result['peak_rss_mb']} MB, "
            f"drain {result['drain_msgs_per_s']} msgs/s, lost {result['lost']}"
        )
        return result


async def run(plan: Plan, args: argparse.Namespace, loop_name: str) -> dict[str, Any]:
    # Start with the disk quiet: writeback left by whatever ran before (a previous run's 20,000 spool files)
    # would slow the first systems measured.
    started = time.monotonic()
    await asyncio.to_thread(os.sync)
    log(f"disk synced in {time.monotonic() - started:.1f}s")
    workdir = Path(tempfile.mkdtemp(prefix="postroom-bench-"))
    document: dict[str, Any] = {
        "schema": "postroom.bench/1",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": report.command_line(),
        "machine": report.machine(),
        "versions": {**report.versions(), "load generator loop": loop_name},
        "settings": {**asdict(plan), "sources": len(DEFAULT_SOURCES), "helo": HELO},
        "results": [],
        "errors": [],
    }
    ordered = [s for s in BASELINE_ORDER if s in plan.systems] + (
        ["postroom"] if "postroom" in plan.systems else []
    )
    profiles = plan.profiles if "postroom" in plan.systems else []
    secret = secrets.token_hex(16)
    receiver = ReceiverProcess(secret, process.free_port())
    try:
        with profile_services(profiles, workdir) as services:
            await receiver.start()
            ctx = Context(workdir, receiver.url, secret, services, plan.without, plan.workers)
            bench = Bench(plan, ctx, receiver)
            if args.py_spy:
                args.out.mkdir(parents=True, exist_ok=True)
            measured: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
            # py-spy profiles one shape: `many` when measured (the spool scenario's shape), else the other.
            spy_shape = "many" if "many" in plan.shapes else plan.shapes[0]
            for round_number in range(1, plan.rounds + 1):
                if plan.rounds > 1:
                    log(f"round {round_number} of {plan.rounds}")
                # Shape by shape, so that the systems a ratio compares are measured minutes apart at most.
                for shape in plan.shapes:
                    # py-spy's extra run once, in the last round: profiling is not what the rounds repeat.
                    profiling_now = args.py_spy and round_number == plan.rounds and shape == spy_shape
                    bench.py_spy = args.out if profiling_now else None
                    for name in ordered:
                        for profile in profiles if name == "postroom" else ["none"]:
                            try:
                                entry = await bench.measure(name, profile, shape)
                                measured.setdefault((name, profile, shape), []).append(entry)
                            except Exception as exc:  # one system failing must not lose the others' figures
                                log(f"[{name}/{profile}/{shape}] FAILED: {exc}")
                                document["errors"].append(
                                    {
                                        "system": name,
                                        "profile": profile,
                                        "shape": shape,
                                        "error": str(exc)[:2000],
                                    }
                                )
            document["results"] = [median_round(entries) for entries in measured.values()]
            # Haraka is installed at its first start, after the document was begun: read its versions now.
            document["versions"].update(report.peer_versions())
            spool_entry = next(
                (
                    e
                    for e in document["results"]
                    if e["system"] == "postroom"
                    and e["profile"] == plan.spool_profile
                    and e["shape"] == spy_shape
                ),
                None,
            )
            # Last: writing and removing 20,000 spool files leaves the disk busy (journal, discards) for a
            # while, which slowed the runs measured after it by ~20% (cheap: 470 msgs/s right after it,
            # 570 without it). Nothing is measured after it now.
            if spool_entry is not None and plan.spool_messages:
                try:
                    spool_entry["spool"] = await bench.spool(plan.spool_profile)
                except Exception as exc:
                    log(f"[postroom/{plan.spool_profile}] spool scenario FAILED: {exc}")
                    document["errors"].append(
                        {"system": "postroom", "profile": plan.spool_profile, "error": str(exc)[:2000]}
                    )
    finally:
        await receiver.stop()
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return document


async def _main(plan: Plan, args: argparse.Namespace, loop_name: str) -> dict[str, Any]:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)  # clean up daemons on SIGTERM as on Ctrl-C
    async with asyncio.timeout(plan.max_minutes * 60):
        return await run(plan, args, loop_name)


def main(argv: list[str] | None = None) -> int:
    plan, args = parse_args(argv)
    if os.geteuid() != 0 and "postfix" in plan.systems:
        log("note: the Postfix baseline needs root (a private instance binds and drops to 'postfix')")
    started = time.monotonic()
    loop_name = install_uvloop()  # before the loop exists: the policy decides what asyncio.run creates
    document = asyncio.run(_main(plan, args, loop_name))
    document["duration_s"] = round(time.monotonic() - started, 1)
    json_path, md_path = report.write(args.out, document)
    print(md_path.read_text())
    log(f"wrote {json_path} and {md_path} in {document['duration_s']:.0f}s")
    return 1 if document["errors"] else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
