"""Async SMTP load generator: N sessions from several 127.x source addresses, M messages in all.

Two modes:
- closed loop (`rate=None`): every session sends its next message as soon as the previous one got its reply —
  the most a server can take with N concurrent clients (throughput);
- open loop (`rate=R`): message i is due at start + i/R whatever happened to earlier ones, and an idle session
  picks it up — the latency a server gives at a steady offered load. `lag` records how late the generator
  itself was, so an overloaded client is visible instead of silently lowering the rate.

Each session sends `per_session` messages, then QUITs and reconnects, so connection set-up is part of the
load as it is for a real MX. Every message gets a record: accept latency (end of DATA to the reply), the queue
id from "250 ... queued as <id>", or the failure.

Run alone: python -m bench.loadgen --port 2525 --messages 2000 --sessions 10 [--rate 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.messages import DEFAULT_MIX, HELO, MessageFactory, Mix
from bench.smtpclient import SmtpError, SmtpSession
from bench.stats import latency_ms

DEFAULT_SOURCES = tuple(f"127.0.10.{i}" for i in range(1, 9))


@dataclass(slots=True)
class MessageRecord:
    seq: int
    marker: str
    size_class: str
    source: str
    t_due: float  # when the message was due (open loop) or picked up (closed loop)
    t_data_end: float = 0.0
    t_reply: float = 0.0
    code: int = 0
    queue_id: str | None = None
    error: str | None = None

    @property
    def accepted(self) -> bool:
        return self.code // 100 == 2

    @property
    def accept_latency(self) -> float:
        return self.t_reply - self.t_data_end


@dataclass
class LoadResult:
    records: list[MessageRecord]
    t_start: float  # just before the first connection attempt
    t_end: float  # the last reply
    connections: int = 0
    session_errors: Counter[str] = field(default_factory=Counter)
    max_lag: float = 0.0  # open loop: worst delay between a message's due time and its MAIL FROM
    client_cpu_s: float = 0.0  # CPU the generator's own process used meanwhile

    @property
    def accepted(self) -> list[MessageRecord]:
        return [r for r in self.records if r.accepted]

    def summary(self) -> dict[str, object]:
        accepted = self.accepted
        elapsed = self.t_end - self.t_start
        refusals = Counter(r.error or str(r.code) for r in self.records if not r.accepted)
        return {
            "messages": len(self.records),
            "accepted": len(accepted),
            "refused_or_failed": len(self.records) - len(accepted),
            "refusals": dict(refusals.most_common(5)),
            "session_errors": dict(self.session_errors.most_common(5)),
            "elapsed_s": round(elapsed, 3),
            "accepted_per_s": round(len(accepted) / elapsed, 1) if elapsed > 0 else None,
            "accept_latency_ms": latency_ms([r.accept_latency for r in accepted], (50, 95, 99)),
            "connections": self.connections,
            "max_lag_ms": round(self.max_lag * 1000, 1),
            "client_cpu_s": round(self.client_cpu_s, 3),
            "with_queue_id": sum(1 for r in accepted if r.queue_id),
        }


@dataclass
class LoadSpec:
    host: str
    port: int
    messages: int
    sessions: int = 10
    per_session: int = 20
    rate: float | None = None  # messages per second offered; None for closed loop
    sources: tuple[str, ...] = DEFAULT_SOURCES
    helo: str = HELO
    first_seq: int = 0
    timeout: float = 30.0  # per SMTP reply
    deadline: float = 600.0  # the whole run; remaining messages are recorded as not sent


class _Run:
    def __init__(self, spec: LoadSpec, factory: MessageFactory) -> None:
        self.spec = spec
        self.factory = factory
        self.records: list[MessageRecord] = []
        self.queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()
        self.connections = 0
        self.session_errors: Counter[str] = Counter()
        self.max_lag = 0.0
        self.deadline = 0.0

    async def worker(self, index: int) -> None:
        spec = self.spec
        source = spec.sources[index % len(spec.sources)] if spec.sources else None
        item: tuple[int, float] | None = None
        failures = 0
        while True:
            try:
                session = await SmtpSession.open(
                    spec.host, spec.port, helo=spec.helo, source=source, timeout=spec.timeout
                )
            except SmtpError as exc:
                self.session_errors[str(exc)[:120]] += 1
                failures += 1
                if failures > 50 or time.monotonic() > self.deadline:
                    return  # the server is gone; main() records what was never sent
                await asyncio.sleep(min(0.05 * failures, 1.0))
                continue
            self.connections += 1
            failures, sent = 0, 0
            try:
                while sent < spec.per_session:
                    item = await self.queue.get()
                    if item is None:
                        await session.quit()
                        return
                    await self._send(session, source or "", *item)
                    item, sent = None, sent + 1
                await session.quit()
            except SmtpError as exc:
                # The session broke mid-message: that message failed; the next session goes on.
                self.session_errors[str(exc)[:120]] += 1
                session.abort()
                if item is not None:
                    self._record(item[0], source or "", item[1]).error = f"session: {exc}"[:200]
                    item = None

    def _record(self, seq: int, source: str, t_due: float) -> MessageRecord:
        message = self.factory.make(seq)
        record = MessageRecord(seq, message.marker, message.size_class, source, t_due)
        self.records.append(record)
        return record

    async def _send(self, session: SmtpSession, source: str, seq: int, t_due: float) -> None:
        message = self.factory.make(seq)
        record = MessageRecord(seq, message.marker, message.size_class, source, t_due)
        if self.spec.rate is not None:
            self.max_lag = max(self.max_lag, time.monotonic() - t_due)
        result = await session.send(message)
        self.records.append(record)
        record.t_data_end, record.t_reply = result.t_data_end, result.t_reply
        record.code, record.queue_id = result.code, result.queue_id
        if not result.ok:
            record.error = result.reply

    async def feed(self) -> None:
        """Put every message on the queue: all at once (closed loop) or each at its due time (open loop)."""
        spec = self.spec
        seqs = range(spec.first_seq, spec.first_seq + spec.messages)
        if spec.rate is None:
            now = time.monotonic()
            for seq in seqs:
                self.queue.put_nowait((seq, now))
        else:
            start = time.monotonic()
            for i, seq in enumerate(seqs):
                due = start + i / spec.rate
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                self.queue.put_nowait((seq, due))
        for _ in range(spec.sessions):
            self.queue.put_nowait(None)


async def run_load(spec: LoadSpec, factory: MessageFactory) -> LoadResult:
    run = _Run(spec, factory)
    cpu_start = _own_cpu()
    t_start = time.monotonic()
    run.deadline = t_start + spec.deadline
    workers = [asyncio.create_task(run.worker(i)) for i in range(spec.sessions)]
    feeder = asyncio.create_task(run.feed())
    done, pending = await asyncio.wait([*workers, feeder], timeout=spec.deadline)
    for task in pending:
        task.cancel()
    for task in [*done, *pending]:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # Whatever is still queued was never sent (all sessions failed or the deadline passed).
    while not run.queue.empty():
        item = run.queue.get_nowait()
        if item is not None:
            run._record(item[0], "", item[1]).error = "not sent"
    t_end = max((r.t_reply for r in run.records), default=time.monotonic())
    return LoadResult(
        run.records, t_start, t_end, run.connections, run.session_errors, run.max_lag, _own_cpu() - cpu_start
    )


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def install_uvloop() -> str:
    """Use uvloop when installed, so the generator takes as little CPU from the server as it can."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    uvloop.install()
    return f"uvloop {importlib.metadata.version('uvloop')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--per-session", type=int, default=20)
    parser.add_argument("--rate", type=float, help="open loop at this many messages/s (default: closed loop)")
    parser.add_argument(
        "--mix", default=DEFAULT_MIX, help="size classes and weights, e.g. small:80,attach:20"
    )
    parser.add_argument("--sources", default=",".join(DEFAULT_SOURCES), help="source addresses ('' = any)")
    parser.add_argument("--run-id", default="cli")
    args = parser.parse_args(argv)
    loop_name = install_uvloop()
    factory = MessageFactory(args.run_id, Mix.parse(args.mix))
    sources = tuple(s for s in args.sources.split(",") if s)
    spec = LoadSpec(args.host, args.port, args.messages, args.sessions, args.per_session, args.rate, sources)
    result = asyncio.run(run_load(spec, factory))
    print(json.dumps({"loop": loop_name, "mix": str(factory.mix), **result.summary()}, indent=2))
    return 0 if len(result.accepted) == len(result.records) else 1


if __name__ == "__main__":
    sys.exit(main())
