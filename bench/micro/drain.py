"""The delivery runner alone: drain N spooled messages to a receiver in its own process.

    python -m bench.micro.drain [--messages 2000] [--concurrency 32] [--workers 1] [--no-fsync]
                                [--spool-threads 8] [--profile]

Prints msgs/s and the runner process's CPU per message; --profile adds the top of a cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import cProfile
import logging
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from inbound.delivery.runner import DeliveryRunner, RunnerLimits
from inbound.delivery.webhook import WebhookClient
from postroom.app.serve import make_executor
from postroom.core.envelope import SpoolEnvelope
from postroom.core.retry import RetrySchedule
from postroom.core.spool import Spool, new_queue_id
from tests.support.harness import free_port, message

SECRET = "bench-secret"
T = TypeVar("T")


def _meta(n: int) -> dict[str, Any]:
    return SpoolEnvelope(
        id=new_queue_id(),
        tenant=f"t{n % 10}",
        mailbox="support",
        received_at="2026-11-22T06:00:00.000000Z",
        mail_from="a@example.org",
        rcpt_to=(f"support@t{n % 10}.helpdesk.test",),
        client_ip="127.0.0.1",
        helo="client.example.org",
    ).to_meta()


class _OnTheLoop(concurrent.futures.Executor):
    """Runs spool file work on the calling thread: for measuring what the hop to a thread costs, never for
    serving (a rename or unlink can block on a busy disk, and the event loop must not)."""

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def _spool_io(threads: int) -> concurrent.futures.Executor:
    if threads == 0:
        return _OnTheLoop()
    return concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="postroom-spool")


async def drain(args: argparse.Namespace) -> None:
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "postroom.helpdesk.receiver", "--port", str(port), "--secret", SECRET],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workdir = tempfile.mkdtemp(prefix="postroom-drain-")
    try:
        await asyncio.sleep(1.0)
        spool = Spool(Path(workdir), fsync=not args.no_fsync).create()
        spool.store([(_meta(n), message(f"m{n}")) for n in range(args.messages)])
        webhook = WebhookClient(
            f"http://127.0.0.1:{port}/tickets",
            SECRET,
            timeout=10,
            max_response_bytes=65536,
            max_connections=args.concurrency,
        )
        runner = DeliveryRunner(
            spool,
            webhook,
            RetrySchedule(initial=30, max_interval=60, max_age=600, jitter=0.2),
            limits=RunnerLimits(concurrency=args.concurrency, per_tenant_concurrency=args.concurrency),
            executor=make_executor(args.workers),
            spool_io=_spool_io(args.spool_threads),
        )
        profiler = cProfile.Profile()
        started, cpu_before = time.perf_counter(), os.times()
        if args.profile:
            profiler.enable()
        await runner.start()
        while spool.ids("incoming") or spool.ids("active"):
            await asyncio.sleep(0.05)
        elapsed, cpu_after = time.perf_counter() - started, os.times()
        profiler.disable()
        await runner.stop()
        await webhook.aclose()
        user, system = (
            sum(getattr(cpu_after, f) - getattr(cpu_before, f) for f in fields)
            for fields in (("user", "children_user"), ("system", "children_system"))
        )
        per_msg = 1000 / args.messages
        print(
            f"{args.messages / elapsed:.0f} msgs/s, runner CPU {(user + system) * per_msg:.2f} ms/msg "
            f"(user {user * per_msg:.2f}, system {system * per_msg:.2f}), "
            f"deferred {len(spool.ids('deferred'))}"
        )
        if args.profile:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
    finally:
        receiver.terminate()
        receiver.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.micro.drain", description=__doc__)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=1, help="normaliser processes (0: threads)")
    parser.add_argument("--no-fsync", action="store_true")
    parser.add_argument(
        "--spool-threads", type=int, default=8, help="spool I/O threads, as the server has; 0: on the loop"
    )
    parser.add_argument("--profile", action="store_true")
    logging.basicConfig(level=logging.ERROR)  # a deferral here is a finding, reported in the summary line
    asyncio.run(drain(parser.parse_args()))


if __name__ == "__main__":
    main()
