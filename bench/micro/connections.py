"""Per-connection cost: one message per SMTP connection, Postroom against the do-nothing aiosmtpd.

    python -m bench.micro.connections [--messages 2000] [--sessions 10] [--rounds 3] [--keep-open]
                                      [--workers 1] [--before TREE] [--profile OUT.txt]

Starts (a) the do-nothing aiosmtpd (bench/baselines/null_aiosmtpd.py) and (b) `postroom serve` with no
filters and a webhook sink (bench/receiver.py), then drives each with Postfix's smtp-source: `--sessions`
parallel sessions, each connection one message (connect, EHLO, MAIL, RCPT, DATA, QUIT); `--keep-open`
sends every session's messages over one connection instead. Rounds are interleaved A/B/A/B, so the shared
machine's drift hits both. A Postroom round ends when the receiver has every ticket, so its CPU includes
delivery (claim, normalise, POST). `--before TREE` runs a second Postroom from another source tree (e.g.
`git archive HEAD~1 | tar -x -C DIR`) in the same rounds, for a before/after of one change.

Reported per round and as medians: msgs/s and the server's CPU ms per message (utime + stime of its
process tree, reaped children included, from /proc), and the ratios to aiosmtpd taken round by round.
CPU per message is the robust figure on a noisy machine. `--profile` adds one Postroom round under
py-spy (--gil: Python's own CPU) after the measured ones and prints the functions with most samples.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from subprocess import Popen

from bench import process, profiling
from bench.postroom_config import MAIL_DOMAIN, Services, render_config
from bench.procstat import cpu_seconds, tree

HOST = "127.0.0.1"
SECRET = "bench-connections-secret-32-bytes-or-more"
REPO = Path(__file__).resolve().parents[2]
DELIVERY_TIMEOUT = 180.0


@dataclass
class Round:
    system: str
    messages: int
    seconds: float
    cpu_seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_ms(self) -> float:
        return self.cpu_seconds * 1000 / self.messages


class Receiver:
    """bench/receiver.py in its own process, driven over its stdin/stdout control lines."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    @classmethod
    async def start(cls) -> Receiver:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.receiver",
            "--secret",
            SECRET,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=REPO,
        )
        assert proc.stdout is not None
        ready = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        return cls(proc, int(ready["port"]))

    async def command(self, line: str) -> dict[str, object]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        answer: dict[str, object] = json.loads(await asyncio.wait_for(self.proc.stdout.readline(), 30))
        return answer

    async def wait_for(self, requests: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats = await self.command("stats")
            if int(str(stats["requests"])) >= requests:
                return
            await asyncio.sleep(0.02)
        raise RuntimeError(f"the receiver got fewer than {requests} tickets within {timeout:.0f}s")

    async def stop(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"quit\n")
            await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def smtp_source(port: int, messages: int, sessions: int, keep_open: bool) -> None:
    exe = shutil.which("smtp-source")
    if exe is None:
        raise RuntimeError("smtp-source (Postfix's load generator) is not on PATH")
    argv = [exe, "-s", str(sessions), "-m", str(messages), "-M", "client.bench.test"]
    argv += ["-f", "a@example.net", "-t", f"x@acme.{MAIL_DOMAIN}"]
    if keep_open:
        argv.append("-d")
    proc = await asyncio.create_subprocess_exec(
        *argv, f"{HOST}:{port}", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"smtp-source failed ({proc.returncode}): {err.decode(errors='replace')[-500:]}")


async def measure(
    name: str, pid: int, port: int, args: argparse.Namespace, receiver: Receiver | None
) -> Round:
    if receiver is not None:
        await receiver.command("reset")
    pids = tree(pid)
    cpu_before, started = cpu_seconds(pids), time.perf_counter()
    await smtp_source(port, args.messages, args.sessions, args.keep_open)
    if receiver is not None:
        await receiver.wait_for(args.messages, DELIVERY_TIMEOUT)
    seconds = time.perf_counter() - started
    return Round(name, args.messages, seconds, cpu_seconds(tree(pid)) - cpu_before)


def postroom_config(workdir: Path, port: int, receiver_port: int, workers: int) -> Path:
    config = workdir / "postroom.toml"
    config.write_text(
        render_config(
            "none",
            listen=f"{HOST}:{port}",
            spool=workdir / "spool",
            webhook_url=f"http://{HOST}:{receiver_port}/tickets",
            secret=SECRET,
            services=Services(),
            overrides={"smtp": {"workers": workers}},
        )
    )
    return config


def report(rounds: list[Round]) -> None:
    by_system: dict[str, list[Round]] = {}
    for r in rounds:
        by_system.setdefault(r.system, []).append(r)
        print(f"  {r.system:9} {r.rate:7.0f} msgs/s  {r.cpu_ms:6.3f} CPU ms/msg")
    for name, runs in by_system.items():
        rate = statistics.median(r.rate for r in runs)
        cpu = statistics.median(r.cpu_ms for r in runs)
        print(f"median {name:9} {rate:7.0f} msgs/s  {cpu:6.3f} CPU ms/msg")
    null = by_system.pop("aiosmtpd")
    for name, runs in by_system.items():
        rate_ratios = [p.rate / n.rate for p, n in zip(runs, null, strict=True)]
        cpu_ratios = [n.cpu_ms / p.cpu_ms for p, n in zip(runs, null, strict=True)]
        print(
            f"{name} / aiosmtpd, round by round: msgs/s {_spread(rate_ratios)}; "
            f"CPU per message (aiosmtpd's / {name}'s) {_spread(cpu_ratios)}"
        )
    if "before" in by_system:
        cpu_ratios = [
            a.cpu_ms / b.cpu_ms for a, b in zip(by_system["postroom"], by_system["before"], strict=True)
        ]
        print(f"postroom / before, CPU per message round by round: {_spread(cpu_ratios)}")


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def spawn_postroom(tree: Path, workdir: Path, receiver: Receiver, workers: int) -> tuple[Popen[bytes], int]:
    """`postroom serve` from the source tree `tree` (this one, or a checkout of an earlier commit)."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = process.free_port()
    config = postroom_config(workdir, port, receiver.port, workers)
    argv = [sys.executable, "-m", "postroom.app.cli", "serve", "--config", str(config)]
    return process.spawn(argv, workdir / "postroom.log", cwd=tree), port


async def run(args: argparse.Namespace) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="postroom-connections-"))
    receiver = await Receiver.start()
    null_port = process.free_port()
    null = process.spawn(
        [sys.executable, "-m", "bench.baselines.null_aiosmtpd", "--port", str(null_port)],
        workdir / "aiosmtpd.log",
        cwd=REPO,
    )
    servers: list[tuple[str, Popen[bytes], int]] = []
    try:
        servers.append(("postroom", *spawn_postroom(REPO, workdir / "postroom", receiver, args.workers)))
        if args.before:
            tree = Path(args.before).resolve()
            servers.append(("before", *spawn_postroom(tree, workdir / "before", receiver, args.workers)))
        await process.wait_smtp(HOST, null_port, 30, null)
        for _, proc, port in servers:
            await process.wait_smtp(HOST, port, 60, proc)
        # Warm-up: imports, first-use caches and the runner's first claims are not what is measured.
        warm = argparse.Namespace(**{**vars(args), "messages": min(200, args.messages)})
        await measure("aiosmtpd", null.pid, null_port, warm, None)
        for name, proc, port in servers:
            await measure(name, proc.pid, port, warm, receiver)
        rounds: list[Round] = []
        for n in range(args.rounds):
            print(f"round {n + 1}/{args.rounds}", flush=True)
            rounds.append(await measure("aiosmtpd", null.pid, null_port, args, None))
            for name, proc, port in servers[:: 1 if n % 2 == 0 else -1]:  # alternate which goes first
                rounds.append(await measure(name, proc.pid, port, args, receiver))
        report(rounds)
        if args.profile:
            _, proc, port = servers[0]
            out = Path(args.profile)
            recorder = profiling.start(proc.pid, out, workdir / "py-spy.log")
            await asyncio.sleep(1.0)  # py-spy attaches
            await measure("postroom", proc.pid, port, args, receiver)
            await profiling.stop(recorder)
            print_profile(out, args.top)
    finally:
        for _, proc, _ in servers:
            await process.stop(proc)
        await process.stop(null)
        await receiver.stop()
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work directory kept: {workdir}")


def print_profile(raw: Path, top: int) -> None:
    summary = profiling.summarize(raw, top=top)
    print(f"py-spy: {summary['samples']} samples, raw stacks in {raw}")
    for title in ("self_pct", "inclusive_pct"):
        print(title)
        rows = summary[title]
        assert isinstance(rows, list)
        for name, pct in rows:
            print(f"  {pct:5.1f}%  {name}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.micro.connections", description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=10, help="parallel SMTP sessions")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--keep-open", action="store_true", help="all of a session's messages on one connection"
    )
    parser.add_argument("--workers", type=int, default=1, help="Postroom's [smtp] workers")
    parser.add_argument("--before", metavar="TREE", help="also run Postroom from this source tree (A/B)")
    parser.add_argument("--profile", metavar="OUT", help="py-spy raw output for one extra Postroom round")
    parser.add_argument("--top", type=int, default=30, help="functions listed from the profile")
    parser.add_argument("--keep-workdir", action="store_true")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
