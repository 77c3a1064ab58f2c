"""ClamAV at the DATA stage: the whole message is streamed to clamd (INSTREAM) before it is queued.

A message larger than `stream_max_length` (which must equal clamd's StreamMaxLength) is never sent: clamd
would cut the stream with an error. What happens to it is the operator's `oversize` choice: "accept" (queued
unscanned, recorded as `virus.scanned = false`), "tempfail" or "reject".

Facts: ``{"virus": {"found": bool, "name": str | None}}`` plus ``"scanned": false`` when not scanned.
Infrastructure faults (clamd down, ERROR reply, timeout) are a `temperror`; the chain answers 451 or, with
`fail_open`, accepts and flags the verdict.
"""

from __future__ import annotations

import logging
from typing import Any

from filters.base import Connection, Filter, Result, Stage, Transaction
from filters.clamd_client import ClamdAddress, ClamdClient, ClamdError, ClamdUnavailable
from filters.config import ClamavConfig
from filters.deps import FilterDeps
from postroom.core.configload import ConfigError

log = logging.getLogger("postroom.filters.clamav")

FOUND = "virus.found"
OVERSIZE_REJECTED = "virus.oversize"
OVERSIZE_DEFERRED = "virus.oversize_deferred"


def _virus(found: bool, name: str | None = None, *, scanned: bool = True) -> dict[str, Any]:
    facts: dict[str, Any] = {"found": found, "name": name}
    if not scanned:
        facts["scanned"] = False
    return facts


class ClamavFilter(Filter):
    name = "clamav"
    stages = frozenset({Stage.DATA})

    def __init__(self, cfg: ClamavConfig, client: ClamdClient) -> None:
        self.cfg = cfg
        self.client = client

    async def check(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
        if txn is None:
            return Result.skipped("no message")
        size = len(txn.message)
        if size > self.cfg.stream_max_length:
            return self._oversize(txn, size)
        try:
            scan = await self.client.instream(txn.message)
        except ClamdUnavailable as exc:
            return Result.temperror("clamav.unavailable", str(exc))
        except ClamdError as exc:
            return Result.temperror("clamav.error", str(exc))
        if scan.found:
            log.warning(
                "virus found",
                extra={
                    "event": "virus",
                    "queue_id": txn.queue_id,
                    "client_ip": conn.peer_ip,
                    "signature": scan.signature,
                },
            )
            return Result.failed(FOUND, scan.signature or "", virus=_virus(True, scan.signature))
        return Result.passed("clean", virus=_virus(False))

    def _oversize(self, txn: Transaction, size: int) -> Result:
        detail = f"message of {size} bytes exceeds the virus scan limit of {self.cfg.stream_max_length} bytes"
        log.info(
            "message too large to scan",
            extra={
                "event": "virus_oversize",
                "queue_id": txn.queue_id,
                "size": size,
                "action": self.cfg.oversize,
            },
        )
        unscanned = _virus(False, scanned=False)
        if self.cfg.oversize == "reject":
            return Result.failed(OVERSIZE_REJECTED, detail, virus=unscanned)
        if self.cfg.oversize == "tempfail":
            return Result.failed(OVERSIZE_DEFERRED, detail, virus=unscanned)
        return Result.skipped(f"{detail}; accepted unscanned", virus=unscanned)


def build(cfg: ClamavConfig, deps: FilterDeps) -> ClamavFilter:
    try:
        address = ClamdAddress.parse(cfg.address)
    except ValueError as exc:
        raise ConfigError("filters.clamav.address", str(exc)) from None
    return ClamavFilter(cfg, ClamdClient(address, chunk_size=cfg.chunk_size))
