"""DNSBL check at connect (RFC 5782): is the client's address listed in any configured zone?

Every zone is queried in parallel. An A answer in 127.0.0.2–127.255.254.255 is a listing (its TXT gives the
reason); NXDOMAIN or NODATA means not listed; a timeout or SERVFAIL is a temporary error (451 unless the
operator chose fail-open), never a silent pass. Answers in 127.255.255.0/24 are the list operator's error
codes ("query refused", "typo in zone name"), and anything outside 127.0.0.0/8 is a parked or hijacked zone:
both mean the zone is unusable, not that the client is listed, so the zone is skipped — as is a zone that
fails its health check (127.0.0.2 must be listed and 127.0.0.1 must not). Answers are cached by their TTL.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from dataclasses import dataclass
from enum import StrEnum

import dns.asyncresolver
import dns.exception
import dns.resolver

from filters.base import Connection, Filter, Result, Stage, Transaction
from filters.config import DnsblConfig
from filters.deps import FilterDeps
from filters.resolver import TtlCache, negative_ttl, uncached

log = logging.getLogger("postroom.filters.dnsbl")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ERROR_CODES = ipaddress.IPv4Network("127.255.255.0/24")
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
NOT_LISTING_CODES = frozenset({ipaddress.IPv4Address("127.0.0.0"), ipaddress.IPv4Address("127.0.0.1")})
# Spamhaus's documented meanings of its error codes; other lists use the same range.
ERROR_MEANINGS = {
    "127.255.255.252": "typo in the DNSBL zone name",
    "127.255.255.254": "query refused (public or unregistered resolver)",
    "127.255.255.255": "query refused (excessive number of queries)",
}
HEALTH_LISTED = ipaddress.IPv4Address("127.0.0.2")
HEALTH_CLEAR = ipaddress.IPv4Address("127.0.0.1")


class Status(StrEnum):
    LISTED = "listed"
    CLEAR = "clear"
    ZONE_ERROR = "zone_error"  # the zone answered, but not with a usable listing: skip the zone
    TEMPERROR = "temperror"  # no answer: timeout, SERVFAIL, REFUSED


@dataclass(frozen=True, slots=True)
class ZoneAnswer:
    zone: str
    status: Status
    codes: tuple[str, ...] = ()
    text: str = ""
    problem: str = ""

    def describe(self) -> str:
        codes = ", ".join(self.codes)
        return f"{self.zone} ({codes}: {self.text})" if self.text else f"{self.zone} ({codes})"


def query_name(ip: IPAddress, zone: str) -> str:
    """RFC 5782 §2.1/2.4: reversed octets for IPv4, reversed nibbles for IPv6, under the zone."""
    reverse = ip.reverse_pointer.removesuffix(".in-addr.arpa").removesuffix(".ip6.arpa")
    return f"{reverse}.{zone.strip('.')}."


def client_address(peer_ip: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(peer_ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped  # an IPv4 client seen on a dual-stack socket is listed under its IPv4 name
    return ip


def classify_codes(codes: list[str]) -> tuple[Status, str]:
    """A listing needs at least one code in 127.0.0.2–127.255.254.255; anything else is a zone problem."""
    addresses = [ipaddress.IPv4Address(code) for code in codes]
    if any(a in LOOPBACK and a not in ERROR_CODES and a not in NOT_LISTING_CODES for a in addresses):
        return Status.LISTED, ""
    errors = [str(a) for a in addresses if a in ERROR_CODES]
    if errors:
        meaning = ERROR_MEANINGS.get(errors[0], "RFC 5782 error code")
        return Status.ZONE_ERROR, f"answered {errors[0]}: {meaning}"
    return Status.ZONE_ERROR, f"answered {', '.join(codes)}, which is not a DNSBL return code"


@dataclass
class ZoneHealth:
    usable: bool = True  # until a health check proves otherwise
    problem: str = ""


class DnsblFilter(Filter):
    name = "dnsbl"
    stages = frozenset({Stage.CONNECT})

    def __init__(self, cfg: DnsblConfig, deps: FilterDeps) -> None:
        self.cfg = cfg
        self.deps = deps
        self.zones = [zone.strip(".").lower() for zone in cfg.zones]
        self.health = {zone: ZoneHealth() for zone in self.zones}
        self.allow = [ipaddress.ip_network(entry, strict=False) for entry in cfg.allow]
        # Our TTL cache holds interpreted answers; health probes must reach the zone's servers.
        self.resolver: dns.asyncresolver.Resolver = uncached(deps.resolver)
        self.cache: TtlCache[tuple[str, str], ZoneAnswer] = TtlCache(cfg.cache_size, deps.monotonic)
        self._next_health_check: float | None = None
        self._refresh: asyncio.Task[dict[str, str]] | None = None

    async def check(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
        ip = client_address(conn.peer_ip)
        if ip is None:
            return Result.skipped(f"no IP address to check ({conn.peer_ip!r})")
        if any(ip in network for network in self.allow):
            return Result.skipped(f"{ip} is allow-listed")
        first_health_check = self._schedule_health_check()
        zones = [zone for zone in self.zones if self.health[zone].usable]
        answers = list(await asyncio.gather(*(self.lookup(ip, zone) for zone in zones)))
        if first_health_check is not None:
            await first_health_check  # ran alongside the lookups, so a slow DNS costs one timeout, not two
            answers = [answer for answer in answers if self.health[answer.zone].usable]
        for answer in answers:
            if answer.status is Status.ZONE_ERROR:
                # Skip the zone for this client; a health check soon tells whether the whole zone refuses us.
                log.warning(
                    "dnsbl zone error",
                    extra={"zone": answer.zone, "client_ip": str(ip), "problem": answer.problem},
                )
                self._next_health_check = self.deps.monotonic()
        return self._result(ip, answers)

    def _result(self, ip: IPAddress, answers: list[ZoneAnswer]) -> Result:
        skipped = {zone: h.problem for zone, h in self.health.items() if not h.usable}
        skipped |= {a.zone: a.problem for a in answers if a.status is Status.ZONE_ERROR}
        listed = [a for a in answers if a.status is Status.LISTED]
        failed = [a for a in answers if a.status is Status.TEMPERROR]
        data = {
            "listed": [{"zone": a.zone, "codes": list(a.codes), "text": a.text} for a in listed],
            "skipped": skipped,
            "errors": {a.zone: a.problem for a in failed},
        }
        note = "".join(f"; skipped {zone}: {problem}" for zone, problem in skipped.items())
        if listed:
            detail = f"{ip} listed by " + "; ".join(a.describe() for a in listed)
            return Result.failed("dnsbl.listed", detail, **data)
        if failed:
            detail = "; ".join(f"{a.zone}: {a.problem}" for a in failed)
            return Result.temperror("dnsbl.temperror", f"DNSBL lookup failed: {detail}", **data)
        checked = [a.zone for a in answers if a.status is Status.CLEAR]
        detail = f"{ip} not listed in {', '.join(checked)}" if checked else "no usable DNSBL zone"
        return Result.passed(detail + note, **data)

    async def lookup(self, ip: IPAddress, zone: str) -> ZoneAnswer:
        """One zone's answer for one address, from the cache while its TTL lasts."""
        key = (zone, str(ip))
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        answer, ttl = await self._query(ip, zone)
        if answer.status in (Status.LISTED, Status.CLEAR):
            self.cache.put(key, answer, ttl)
        return answer

    async def _query(self, ip: IPAddress, zone: str) -> tuple[ZoneAnswer, float]:
        qname = query_name(ip, zone)
        try:
            a_answer = await self.resolver.resolve(qname, "A", search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as exc:
            return ZoneAnswer(zone, Status.CLEAR), negative_ttl(exc)
        except dns.exception.DNSException as exc:
            problem = f"{type(exc).__name__}: {exc}"
            log.warning("dnsbl lookup failed", extra={"zone": zone, "qname": qname, "error": str(exc)})
            return ZoneAnswer(zone, Status.TEMPERROR, problem=problem), 0.0
        codes = sorted(rdata.to_text() for rdata in a_answer)
        ttl = float(a_answer.rrset.ttl) if a_answer.rrset is not None else 0.0
        status, problem = classify_codes(codes)
        text = await self._reason_text(qname) if status is Status.LISTED else ""
        return ZoneAnswer(zone, status, tuple(codes), text, problem), ttl

    async def _reason_text(self, qname: str) -> str:
        """The list's TXT explanation; optional, so a failed lookup only loses the text."""
        try:
            answer = await self.resolver.resolve(qname, "TXT", search=False)
        except dns.exception.DNSException:
            return ""
        return " ".join(b"".join(rdata.strings).decode("utf-8", "replace") for rdata in answer)

    async def start(self) -> None:
        """Health-check the zones before the first connection, so no client is judged by a broken zone."""
        await self.health_check()

    async def health_check(self) -> dict[str, str]:
        """Check every zone now; returns the unusable zones with the reason."""
        await asyncio.gather(*(self._check_zone(zone) for zone in self.zones))
        self._next_health_check = self.deps.monotonic() + self.cfg.health_check_interval
        return {zone: h.problem for zone, h in self.health.items() if not h.usable}

    def _schedule_health_check(self) -> asyncio.Task[dict[str, str]] | None:
        """Start a health check when one is due; until the first one completes, return it to be awaited."""
        due = self._next_health_check is None or self.deps.monotonic() >= self._next_health_check
        if due and (self._refresh is None or self._refresh.done()):
            self._refresh = asyncio.create_task(self.health_check(), name="dnsbl-health-check")
        return self._refresh if self._next_health_check is None else None

    async def _check_zone(self, zone: str) -> None:
        listed, clear = await asyncio.gather(
            self._query(HEALTH_LISTED, zone), self._query(HEALTH_CLEAR, zone)
        )
        for answer, _ in (listed, clear):
            if answer.status is Status.TEMPERROR:
                # No evidence either way: keep the zone's current state and let lookups report the fault.
                log.warning("dnsbl health check inconclusive", extra={"zone": zone, "error": answer.problem})
                return
        if listed[0].status is not Status.LISTED:
            self._mark_unusable(zone, listed[0].problem or f"does not list the test entry {HEALTH_LISTED}")
        elif clear[0].status is not Status.CLEAR:
            self._mark_unusable(
                zone, clear[0].problem or f"lists {HEALTH_CLEAR}, so it answers for any address"
            )
        elif not self.health[zone].usable:
            log.warning("dnsbl zone usable again", extra={"zone": zone})
            self.health[zone] = ZoneHealth()

    def _mark_unusable(self, zone: str, problem: str) -> None:
        if self.health[zone].usable or self.health[zone].problem != problem:
            log.warning("dnsbl zone skipped", extra={"zone": zone, "problem": problem})
        self.health[zone] = ZoneHealth(usable=False, problem=problem)


def build(cfg: DnsblConfig, deps: FilterDeps) -> Filter:
    return DnsblFilter(cfg, deps)
