"""SPF check at MAIL FROM (RFC 7208) with pyspf, on Postroom's resolver.

pyspf is blocking, so each check runs in a worker thread; the event loop only awaits it. pyspf looks names
up through its module-level `spf.DNSLookup`: we replace it once with a dispatcher that uses the resolver of
the check running in the current thread (a context variable), so lookups go to `[dns] nameservers` and not
to /etc/resolv.conf. pyspf bounds its lookups only when `querytime` is set, so every check gets a total DNS
budget below the filter timeout, and the thread is awaited with a deadline of its own.

Evaluations are cached per (client IP, identity domain, identity) — the only inputs of a record without
macros — for the shortest TTL of the answers used, at most `cache_ttl`: a hit costs no thread, no DNS and no
pyspf evaluation (docs/benchmark.md). A record using macros (%{l}, %{h}, ...) depends on more than the key
and is never cached; neither is a temperror. The Received-SPF header names this message's sender and HELO,
so it is rebuilt for every message by pyspf's own code from the cached result.

Outcomes: fail → "spf.fail" (550 5.7.23); temperror → "spf.temperror" (451 4.7.24); softfail is recorded
(refused only with reject_softfail); permerror is recorded (refused only with reject_permerror) because it
says the sender's DNS is broken, not that the mail is forged, and RFC 7208 §8.7 leaves its handling to the
receiver; pass, none and neutral pass. Every result is recorded in txn.facts["spf"] and a Received-SPF header.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
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
from filters.resolver import TtlCache, sync_twin

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
    """pyspf's DNS lookup on a dnspython resolver; DNS failures become pyspf's TempError.

    One per evaluation: it notes what decides whether the result may be cached — the earliest expiry of the
    answers used, and whether any TXT record carried a macro.
    """

    def __init__(self, resolver: dns.resolver.Resolver) -> None:
        self.resolver = resolver
        self.expires = math.inf  # wall-clock time, as dnspython's Answer.expiration
        self.uses_macros = False

    def __call__(self, name: str, qtype: str, timeout: float) -> PyspfAnswer:
        try:
            answer = self.resolver.resolve(name, qtype, lifetime=max(timeout, 0.01), search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return []
        except dns.exception.DNSException as exc:
            raise spf.TempError(f"DNS {type(exc).__name__} looking up {name}/{qtype}: {exc}") from exc
        self.expires = min(self.expires, answer.expiration)
        values = [((name, qtype), self._value(qtype, rdata)) for rdata in answer]
        if qtype in ("TXT", "SPF") and any(b"%" in part for _, strings in values for part in strings):
            self.uses_macros = True
        return values

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


@dataclass(frozen=True, slots=True)
class CachedResult:
    """pyspf's state after a check that the headers and the verdict are made of."""

    result: str
    explanation: str
    mechanism: str | None
    problem: tuple[str, ...]  # pyspf's `mech`: the offending terms of a permerror
    problem_detail: str | None  # pyspf's `prob`

    @classmethod
    def of(cls, query: spf.query, evaluation: SpfEvaluation) -> CachedResult:
        return cls(
            evaluation.result,
            evaluation.explanation,
            query.mechanism,
            tuple(query.mech),
            getattr(query, "prob", None),
        )

    def apply_to(self, query: spf.query) -> None:
        query.mechanism = self.mechanism
        query.mech = list(self.problem)
        if self.problem_detail is not None:
            query.prob = self.problem_detail


class SpfFilter(Filter):
    name = "spf"
    stages = frozenset({Stage.MAIL})

    def __init__(self, cfg: SpfConfig, deps: FilterDeps) -> None:
        _install_dispatcher()
        self.cfg = cfg
        self.hostname = deps.hostname
        self.dns_budget = cfg.timeout * DNS_BUDGET_SHARE
        self.resolver = sync_twin(deps.resolver)
        self.cache: TtlCache[tuple[str, str, str], CachedResult] | None = (
            TtlCache(cfg.cache_size, deps.monotonic) if cfg.cache_size else None
        )

    async def check(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
        sender = txn.mail_from if txn else ""
        if not sender and not _is_domain(conn.helo):
            return Result.skipped("null sender and no HELO domain to check")
        query = spf.query(
            i=conn.peer_ip, s=sender, h=conn.helo, receiver=self.hostname, querytime=self.dns_budget
        )
        key = (query.c, query.o.lower(), query.ident)
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            cached.apply_to(query)
            evaluation = self._evaluation(query, cached.result, cached.explanation)
        else:
            try:
                # The deadline sits between pyspf's own DNS budget and the chain's timeout, so a stuck check
                # ends here as spf.temperror. The thread itself ends within the DNS budget.
                evaluation, keep_for = await asyncio.wait_for(
                    asyncio.to_thread(self._evaluate, query),
                    timeout=(self.dns_budget + self.cfg.timeout) / 2,
                )
            except TimeoutError:
                evaluation, keep_for = self._timed_out(conn.peer_ip, sender, conn.helo), 0.0
            if self.cache is not None and keep_for > 0:  # put here: the cache belongs to the loop thread
                self.cache.put(key, CachedResult.of(query, evaluation), keep_for)
        if txn is not None:
            txn.add_headers.append(("Received-SPF", evaluation.header))
        log.debug(
            "spf evaluated",
            extra={"result": evaluation.result, "domain": evaluation.domain, "cached": cached is not None},
        )
        return self._result(evaluation)

    def _evaluate(self, query: spf.query) -> tuple[SpfEvaluation, float]:
        """Runs in a worker thread: the evaluation, and how long it may be cached (0: not at all)."""
        lookup = ResolverLookup(self.resolver)
        _current_lookup.set(lookup)  # to_thread runs us in a copy of the context: nothing leaks
        result, _code, explanation = query.check()
        cacheable = result != "temperror" and not lookup.uses_macros
        keep_for = min(lookup.expires - time.time(), self.cfg.cache_ttl) if cacheable else 0.0
        return self._evaluation(query, result, explanation), keep_for

    def _evaluation(self, query: spf.query, result: str, explanation: str) -> SpfEvaluation:
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
