"""SPF check at MAIL FROM (RFC 7208) with pyspf, on Postroom's resolver.

pyspf is blocking, so each check runs in a worker thread; the event loop only awaits it. pyspf looks names
up through its module-level `spf.DNSLookup`: we replace it once with a dispatcher that uses the resolver of
the check running in the current thread (a context variable), so lookups go to `[dns] nameservers` and not
to /etc/resolv.conf. pyspf bounds its lookups only when `querytime` is set, so every check gets a total DNS
budget below the filter timeout, and the thread is awaited with a deadline of its own.

Outcomes: fail → "spf.fail" (550 5.7.23); temperror → "spf.temperror" (451 4.7.24); softfail is recorded
(refused only with reject_softfail); permerror is recorded (refused only with reject_permerror) because it
says the sender's DNS is broken, not that the mail is forged, and RFC 7208 §8.7 leaves its handling to the
receiver; pass, none and neutral pass. Every result is recorded in txn.facts["spf"] and a Received-SPF header.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.resolver
import spf

from filters.base import Connection, Filter, Outcome, Result, Stage, Transaction
from filters.config import SpfConfig
from filters.deps import FilterDeps
from filters.resolver import sync_twin

log = logging.getLogger("postroom.filters.spf")

# pyspf's answer format: [((name, type), value), ...]; TXT values are tuples of byte strings.
PyspfAnswer = list[tuple[tuple[str, str], Any]]
PyspfLookup = Callable[[str, str, float], PyspfAnswer]

_current_lookup: ContextVar[PyspfLookup | None] = ContextVar("spf_lookup", default=None)
_pyspf_default_lookup = spf.DNSLookup
# Of the filter timeout, the share pyspf may spend on DNS; the rest covers thread start and evaluation.
DNS_BUDGET_SHARE = 0.8


def _dispatching_lookup(name: str, qtype: str, strict: Any = True, timeout: float = 20.0) -> PyspfAnswer:
    lookup = _current_lookup.get()
    if lookup is None:  # pyspf used outside this filter: its own behaviour
        return _pyspf_default_lookup(name, qtype, strict, timeout)  # type: ignore[no-any-return]
    return lookup(name, qtype, timeout)


def _install_dispatcher() -> None:
    spf.DNSLookup = _dispatching_lookup


class ResolverLookup:
    """pyspf's DNS lookup on a dnspython resolver; DNS failures become pyspf's TempError."""

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver

    def __call__(self, name: str, qtype: str, timeout: float) -> PyspfAnswer:
        try:
            answer = self.resolver.resolve(name, qtype, lifetime=max(timeout, 0.01), search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise spf.TempError(f"DNS {type(exc).__name__} looking up {name}/{qtype}: {exc}") from exc
        return [((name, qtype), self._value(qtype, rdata)) for rdata in answer]

    @staticmethod
    def _value(qtype: str, rdata: Any) -> Any:
        if qtype in ("A", "AAAA"):
            return rdata.address
        if qtype == "MX":
            return (rdata.preference, rdata.exchange.to_text(omit_final_dot=True))
        if qtype == "PTR":
            return rdata.target.to_text(omit_final_dot=True)
        return rdata.strings  # TXT / SPF


@dataclass(frozen=True, slots=True)
class SpfEvaluation:
    result: str  # pass, fail, softfail, neutral, none, permerror, temperror
    domain: str
    identity: str  # "mailfrom", or "helo" for the null sender
    comment: str
    explanation: str
    header: str  # the Received-SPF value


class SpfFilter:
    name = "spf"
    stages = frozenset({Stage.MAIL})

    def __init__(self, cfg: SpfConfig, deps: FilterDeps) -> None:
        _install_dispatcher()
        self.cfg = cfg
        self.timeout = cfg.timeout
        self.mode = cfg.mode
        self.fail_open = cfg.fail_open
        self.hostname = deps.hostname
        self.dns_budget = cfg.timeout * DNS_BUDGET_SHARE
        self.lookup = ResolverLookup(sync_twin(deps.resolver))

    async def check(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
        sender = txn.mail_from if txn else ""
        if not sender and not _is_domain(conn.helo):
            return Result.skipped("null sender and no HELO domain to check")
        try:
            # The deadline sits between pyspf's own DNS budget and the chain's timeout, so a stuck check
            # ends here as spf.temperror. The thread itself ends within the DNS budget.
            evaluation = await asyncio.wait_for(
                asyncio.to_thread(self._evaluate, conn.peer_ip, sender, conn.helo),
                timeout=(self.dns_budget + self.timeout) / 2,
            )
        except TimeoutError:
            evaluation = self._timed_out(conn.peer_ip, sender, conn.helo)
        if txn is not None:
            txn.add_headers.append(("Received-SPF", evaluation.header))
        log.debug("spf evaluated", extra={"result": evaluation.result, "domain": evaluation.domain})
        return self._result(evaluation)

    def _evaluate(self, ip: str, sender: str, helo: str) -> SpfEvaluation:
        """Runs in a worker thread."""
        _current_lookup.set(self.lookup)  # to_thread runs us in a copy of the context: nothing leaks
        query = spf.query(i=ip, s=sender, h=helo, receiver=self.hostname, querytime=self.dns_budget)
        result, _code, explanation = query.check()
        return SpfEvaluation(
            result=result,
            domain=query.o,
            identity=query.ident,
            comment=query.get_header_comment(result),
            explanation=explanation,
            header=query.get_header(result, self.hostname),
        )

    def _timed_out(self, ip: str, sender: str, helo: str) -> SpfEvaluation:
        domain = sender.rpartition("@")[2] if sender else helo
        identity = "mailfrom" if sender else "helo"
        comment = f"SPF check of {domain} did not finish within {self.dns_budget:g}s"
        envelope = f'envelope-from="{sender}"; ' if sender else ""
        header = (
            f"TempError ({self.hostname}: {comment}) client-ip={ip}; {envelope}helo={helo}; "
            f"receiver={self.hostname}; identity={identity}"
        )
        return SpfEvaluation("temperror", domain, identity, comment, comment, header)

    def _result(self, ev: SpfEvaluation) -> Result:
        data = {
            "result": ev.result,
            "domain": ev.domain,
            "identity": ev.identity,
            "detail": ev.comment,
            "explanation": ev.explanation,
        }
        reason = f"spf.{ev.result}"
        if ev.result == "temperror":
            return Result(Outcome.TEMPERROR, reason, ev.comment, data)
        refused = {
            "fail": True,
            "softfail": self.cfg.reject_softfail,
            "permerror": self.cfg.reject_permerror,
        }.get(ev.result, False)
        return Result(Outcome.FAIL if refused else Outcome.PASS, reason, ev.comment, data)


def _is_domain(name: str) -> bool:
    return "." in name.strip(".") and not name.startswith("[")


def build(cfg: SpfConfig, deps: FilterDeps) -> Filter:
    return SpfFilter(cfg, deps)
