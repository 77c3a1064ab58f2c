"""CPU cost of one structured log line, from `log.info(...)` to the bytes written.

    python -m bench.micro.logcost [--records 20000] [--repeats 7] [--format json|text] [--out /dev/null]

Configures logging as `postroom serve` does (postroom.app.logsetup.configure_logging, stderr swapped for
`--out`,
line-buffered like stderr), then emits the per-message INFO events with the field shapes of their call
sites (connect, queued, delivered, disconnect) and prints µs per record, best of `--repeats`.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time

from postroom.app.config import config_from_mapping
from postroom.app.logsetup import configure_logging

smtp_log = logging.getLogger("inbound.smtp.handler")
delivery_log = logging.getLogger("inbound.delivery.runner")


def emit(records: int) -> float:
    """Seconds for `records` log calls, four events per simulated message."""
    started = time.perf_counter()
    for n in range(records // 4):
        session, queue_id = f"S{n:08x}", f"20240501T120000-{n:08x}"
        smtp_log.info("connect", extra={"event": "connect", "session": session, "client_ip": "203.0.113.7"})
        queued: dict[str, object] = {"event": "queued", "queue_id": queue_id, "session": session}
        smtp_log.info("queued", extra={**queued, "tenant": "acme", "size": 5210, "client_ip": "203.0.113.7"})
        smtp_log.info("disconnect", extra={"event": "disconnect", "session": session})
        extra: dict[str, object] = {"queue_id": queue_id, "tenant": "acme", "attempt": 1}
        delivery_log.info("delivered", extra={**extra, "event": "delivered", "status": 201, "ms": 12.3})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.micro.logcost", description=__doc__)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--format", choices=["json", "text"], default="json")
    parser.add_argument("--out", default=os.devnull, help="where the log lines go (default: /dev/null)")
    args = parser.parse_args()
    config = config_from_mapping(
        {
            "logging": {"format": args.format},
            "webhook": {"secret": "whsec-bench-7f3a9c"},
            "filters": {"rspamd": {"password": "rspamd-bench-pw"}},
        }
    )
    with open(args.out, "w", buffering=1) as out:
        with contextlib.redirect_stderr(out):
            configure_logging(config)
        emit(1000)  # warm-up
        best = min(emit(args.records) for _ in range(args.repeats))
    records = args.records // 4 * 4
    print(f"{args.format}: {best / records * 1e6:.2f} µs per record (best of {args.repeats} × {records})")


if __name__ == "__main__":
    main()
