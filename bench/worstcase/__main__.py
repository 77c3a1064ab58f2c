"""`python -m bench.worstcase`: the normaliser's cost on hostile messages of 1, 2, 5 and 10 MiB.

Each (generator, size) runs in a fresh subprocess, so peak RSS (ru_maxrss) is that message's alone. Reported:
CPU seconds of `build_ticket` + serialisation, the process's peak RSS, and the ticket's JSON size per MiB of
input. Cost that grows linearly shows as a flat "CPU s/MiB" and "ticket MiB/MiB" across the sizes.

    python -m bench.worstcase [--sizes 1,2,5,10] [--only NAME,...] [--timeout 120] [--memory-mb 4096]

A run that exceeds --timeout (wall seconds) or --memory-mb (address space; the child gets MemoryError) is
reported as such: the code before the fixes needed minutes and gigabytes for some of these.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from bench.worstcase.generators import GENERATORS

MIB = 1024 * 1024


def measure_one(name: str, size: int) -> dict[str, float]:
    """Run in the child: generate, normalise, serialise; CPU time covers the last two only."""
    from inbound.ticket.payload import TicketContext, build_ticket, ticket_json

    raw = GENERATORS[name](size)
    context = TicketContext(
        id="worstcase",
        received_at="2026-01-01T00:00:00Z",
        tenant="bench",
        mailbox="support",
        mailbox_hash=None,
        envelope={"mail_from": "a@example.com", "rcpt_to": ["support@example.com"], "client_ip": "",
                  "helo": "", "tls": False},
    )  # fmt: skip
    started = time.process_time()
    body = ticket_json(build_ticket(raw, context))
    cpu = time.process_time() - started
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"input": len(raw), "cpu": cpu, "rss_mb": peak_kib / 1024, "ticket": len(body)}


def run(name: str, size_mib: float, timeout: float, memory_mb: int) -> dict[str, float] | str:
    command = [sys.executable, "-m", "bench.worstcase", "--child", name, str(int(size_mib * MIB))]
    command += ["--memory-mb", str(memory_mb)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return f"> {timeout:.0f} s"
    if "MemoryError" in done.stderr:
        return f"> {memory_mb} MB"
    if done.returncode != 0:
        return f"failed ({done.returncode})"
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worstcase", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,2,5,10", help="message sizes in MiB, comma-separated")
    parser.add_argument("--only", default="", help="generator names, comma-separated (default: all)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run before giving up")
    parser.add_argument("--memory-mb", type=int, default=4096, help="address-space limit per run")
    parser.add_argument("--child", nargs=2, metavar=("NAME", "BYTES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        limit = args.memory_mb * MIB
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(measure_one(args.child[0], int(args.child[1]))))
        return 0
    names = [n for n in args.only.split(",") if n] or list(GENERATORS)
    unknown = sorted(set(names) - set(GENERATORS))
    if unknown:
        parser.error(f"unknown generator(s): {', '.join(unknown)}; known: {', '.join(GENERATORS)}")
    sizes = [float(s) for s in args.sizes.split(",") if s]
    print("| class | MiB | CPU s | CPU s/MiB | peak RSS MB | ticket MiB/MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        for size in sizes:
            result = run(name, size, args.timeout, args.memory_mb)
            if isinstance(result, str):
                print(f"| {name} | {size:g} | {result} | | | |", flush=True)
                continue
            mib = result["input"] / MIB
            print(
                f"| {name} | {size:g} | {result['cpu']:.2f} | {result['cpu'] / mib:.3f} | "
                f"{result['rss_mb']:.0f} | {result['ticket'] / result['input']:.2f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
