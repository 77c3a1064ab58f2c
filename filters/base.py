"""The stage interface every filter implements.

Filters report facts (a `Result`); they never choose SMTP reply codes nor apply their section's `mode`,
`timeout` or `fail_open`: `filters.chain` does, once for every filter, and `postroom.core.replies` turns
results into replies from one table.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Stage(StrEnum):
    """SMTP stages at which a filter can run, in protocol order."""

    CONNECT = "connect"
    HELO = "helo"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"


class Outcome(StrEnum):
    """What a check found. Only `fail` and `temperror` can change the SMTP reply."""

    PASS = "pass"
    FAIL = "fail"
    TEMPERROR = "temperror"
    SKIP = "skip"


class Mode(StrEnum):
    ENFORCE = "enforce"
    OBSERVE = "observe"


@dataclass(frozen=True, slots=True)
class Result:
    """The fact a filter reports.

    `reason` is a stable machine key (e.g. ``"spf.fail"``, ``"dnsbl.listed"``, ``"virus.found"``) that the
    policy table maps to an SMTP reply; `detail` is human text that may appear in the reply; `data`
    holds structured facts for the ticket (spam score, symbols, virus name, auth results, ...).
    `mark_headers` mark the message (``X-Spam: Yes``): the chain adds them only when the filter is enforced,
    so an observed filter leaves the message as it was. Trace headers that only record facts
    (Received-SPF, Authentication-Results) go to `Transaction.add_headers` directly.
    """

    outcome: Outcome
    reason: str = ""
    detail: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)
    mark_headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def passed(cls, detail: str = "", **data: Any) -> Result:
        return cls(Outcome.PASS, "", detail, data)

    @classmethod
    def skipped(cls, detail: str = "", **data: Any) -> Result:
        return cls(Outcome.SKIP, "", detail, data)

    @classmethod
    def failed(cls, reason: str, detail: str = "", **data: Any) -> Result:
        return cls(Outcome.FAIL, reason, detail, data)

    @classmethod
    def temperror(cls, reason: str, detail: str = "", **data: Any) -> Result:
        return cls(Outcome.TEMPERROR, reason, detail, data)


@dataclass(slots=True)
class Verdict:
    """One filter's result at one stage, as recorded in the ticket's `verdicts[]`."""

    stage: str
    filter: str
    result: str
    reason: str
    detail: str
    ms: float
    mode: str
    action: str  # "accept", "reject", "tempfail", or "observe" (would have rejected/tempfailed)
    failed_open: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "filter": self.filter,
            "result": self.result,
            "reason": self.reason,
            "detail": self.detail,
            "ms": round(self.ms, 3),
            "mode": self.mode,
            "action": self.action,
            "failed_open": self.failed_open,
        }


@dataclass(slots=True)
class Connection:
    """What is known about the SMTP client; lives for the whole session."""

    session_id: str
    peer_ip: str
    peer_port: int = 0
    helo: str = ""
    esmtp: bool = False
    tls: bool = False
    auth_user: str = ""
    reverse_name: str = ""
    verdicts: list[Verdict] = field(default_factory=list)  # connect/helo stage results


@dataclass(slots=True)
class Transaction:
    """One MAIL FROM ... DATA transaction."""

    queue_id: str
    mail_from: str = ""
    rcpt_to: list[str] = field(default_factory=list)
    rcpt: str = ""  # the recipient being checked at the RCPT stage
    message: bytes = b""
    verdicts: list[Verdict] = field(default_factory=list)
    # Structured facts gathered by filters for the ticket: "auth", "spam", "virus".
    facts: dict[str, Any] = field(default_factory=dict)
    # Trace headers to prepend to the stored message, e.g. Authentication-Results, Received-SPF.
    add_headers: list[tuple[str, str]] = field(default_factory=list)


class Filter(ABC):
    """A check run at one or more SMTP stages, with the lifecycle hooks the chain and the app call.

    Subclasses set `name` (the verdict's filter name) and `stages`, and implement `check`. `check` must not
    block the event loop; blocking libraries run in a thread with a bounded time. The chain bounds each check
    by the section's `timeout` and turns an exception into a `temperror`.

    The hooks are no-ops here; a filter overrides those it needs:
    - `start`: once before the listener accepts a connection (DNSBL zone health checks);
    - `aclose`: once at shutdown, after the last check (connection pools);
    - `session_closed`: when any SMTP session ends, whatever its stage (the throttle's concurrency slot);
    - `record_refusal`: after every refusal the listener sends, whichever filter or rule caused it (the
      throttle's auto-block).
    """

    name: str
    stages: frozenset[Stage]

    @abstractmethod
    async def check(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Result: ...

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def session_closed(self, conn: Connection) -> None:
        return None

    async def record_refusal(self, conn: Connection, reason: str) -> None:
        return None
