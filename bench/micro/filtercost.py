"""CPU and wall time of one check of each cheap filter (DNSBL, FQDN, SPF, throttle) against a local NSD.

    python -m bench.micro.filtercost [--checks 300] [--dns-cache 50000]

Starts NSD with the test zones (tests/servers/dns.py), builds the filters as `postroom serve` does, and runs
each stage's check `--checks` times with a new sender local part each time (one domain, as traffic repeats).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from filters.base import Connection, Stage, Transaction
from filters.deps import FilterDeps
from filters.registry import build_filters
from filters.resolver import make_resolver
from postroom.app.config import config_from_mapping
from tests.servers.dns import DnsServer, run_nsd

UNLIMITED = {
    "ip_concurrency": 0,
    "ip_connections_per_minute": 0,
    "ip_messages_per_minute": 0,
    "ip_recipients_per_minute": 0,
    "sender_messages_per_minute": 0,
    "tenant_messages_per_minute": 0,
}


async def measure(dns: DnsServer, checks: int, cache_size: int) -> None:
    config = config_from_mapping(
        {
            "dns": {"nameservers": [dns.nameserver], "cache_size": cache_size},
            "spool": {"path": tempfile.mkdtemp(prefix="postroom-filtercost-")},
            "filters": {
                "dnsbl": {"enabled": True, "zones": ["dnsbl.test"]},
                "fqdn": {"enabled": True},
                "spf": {"enabled": True},
                "throttle": {"enabled": True, **UNLIMITED},
            },
        }
    )
    deps = FilterDeps(resolver=make_resolver(config.dns), hostname="mx.helpdesk.test")
    for flt in build_filters(config.filters, deps):
        for stage in sorted(flt.stages, key=list(Stage).index):
            cpu_before, wall_before = time.process_time(), time.perf_counter()
            for n in range(checks):
                conn = Connection(session_id="bench", peer_ip="127.0.0.1", helo="mail.hosts.test")
                txn = Transaction(
                    queue_id="bench", mail_from=f"u{n}@pass.spf.test", rcpt="a@acme.helpdesk.test"
                )
                await flt.check(stage, conn, None if stage in (Stage.CONNECT, Stage.HELO) else txn)
            cpu = (time.process_time() - cpu_before) / checks * 1000
            wall = (time.perf_counter() - wall_before) / checks * 1000
            print(f"{flt.name:9} {stage.value:8} cpu {cpu:.2f} ms  wall {wall:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.micro.filtercost", description=__doc__)
    parser.add_argument("--checks", type=int, default=300)
    parser.add_argument("--dns-cache", type=int, default=50000, help="[dns] cache_size; 0 = no answer cache")
    args = parser.parse_args()
    with run_nsd(Path(tempfile.mkdtemp(prefix="postroom-filtercost-nsd-"))) as dns:
        asyncio.run(measure(dns, args.checks, args.dns_cache))


if __name__ == "__main__":
    main()
