"""HELO and sender-domain checks, after Postfix's reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname,
reject_non_fqdn_sender and reject_unknown_sender_domain.

HELO stage: the name must be a syntactically valid host name or an address literal ([192.0.2.1],
[IPv6:2001:db8::1]); a bare IP address is invalid; a valid name must be fully qualified. The client's
forward-confirmed reverse DNS is looked up and recorded (Connection.reverse_name, verdict detail), never
refused.

MAIL stage: the sender's domain must be fully qualified and exist for mail: an MX that is not a null MX
(RFC 7505), or else an A/AAAA record. NXDOMAIN, or no MX/A/AAAA at all, is "fqdn.sender_domain_unknown"
(550); a DNS failure without a positive answer is "fqdn.sender_domain_temperror" (450), as Postfix does
(its unknown_address_reject_code defaults to 450 for both; Postroom's reply table makes the sure case 550).
The null sender has no domain and skips these checks. Each check's `reject_*` switch turns a refusal into
a recorded pass.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
from typing import Any

import dns.asyncresolver
import dns.exception
import dns.name
import dns.resolver
import dns.reversename

from filters.base import Connection, Filter, Outcome, Result, Stage, Transaction
from filters.config import FqdnConfig
from filters.deps import FilterDeps

log = logging.getLogger("postroom.filters.fqdn")

# Postfix's valid_hostname(): letters, digits, hyphen and underscore; labels of 1-63, names up to 255.
_LABEL = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")
MAX_PTR_NAMES = 10  # bound the forward lookups a hostile PTR set can cause


def helo_problem(helo: str) -> tuple[str, str] | None:
    """(reason, detail) when the HELO name is invalid or not fully qualified, else None."""
    if not helo:
        return "fqdn.helo_invalid", "empty HELO name"
    if helo.startswith("[") and helo.endswith("]"):
        literal = helo[1:-1]
        literal = literal[5:] if literal[:5].lower() == "ipv6:" else literal
        try:
            ipaddress.ip_address(literal)
        except ValueError:
            return "fqdn.helo_invalid", f"invalid address literal {helo}"
        return None
    if _is_ip_address(helo):
        return "fqdn.helo_invalid", f"bare IP address {helo} (an address literal needs brackets: [{helo}])"
    problem = hostname_problem(helo)
    if problem:
        return "fqdn.helo_invalid", f"{helo}: {problem}"
    if "." not in helo.rstrip("."):
        return "fqdn.helo_not_fqdn", f"{helo} is not a fully-qualified domain name"
    return None


def hostname_problem(name: str) -> str:
    """Why `name` is not a valid host name, or "" if it is."""
    name = name.rstrip(".")
    if not name or len(name) > 255:
        return "empty or longer than 255 characters"
    labels = name.split(".")
    if any(not _LABEL.match(label) for label in labels):
        return "invalid character or label"
    if labels[-1].isdigit():
        return "numeric top-level label"
    return ""


def sender_domain(sender: str) -> str:
    return sender.rpartition("@")[2] if "@" in sender else ""


def sender_domain_problem(domain: str) -> str:
    """Why a sender domain is not a fully-qualified domain name, or "" if it is."""
    if not domain:
        return "missing"
    if "." not in domain.rstrip("."):
        return "not fully qualified"
    return hostname_problem(domain)


def _is_ip_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


class FqdnFilter(Filter):
    name = "fqdn"
    stages = frozenset({Stage.HELO, Stage.MAIL})

    def __init__(self, cfg: FqdnConfig, deps: FilterDeps) -> None:
        self.cfg = cfg
        self.resolver: dns.asyncresolver.Resolver = deps.resolver

    async def check(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
        if stage is Stage.HELO:
            return await self._check_helo(conn)
        return await self._check_sender(txn.mail_from if txn else "")

    async def _check_helo(self, conn: Connection) -> Result:
        reverse_name, reverse_detail = await self.forward_confirmed_reverse_name(conn.peer_ip)
        conn.reverse_name = reverse_name
        data = {"helo": conn.helo, "reverse_name": reverse_name, "reverse_dns": reverse_detail}
        problem = helo_problem(conn.helo)
        if problem is None:
            return Result(Outcome.PASS, "", f"HELO {conn.helo} ok; {reverse_detail}", data)
        reason, detail = problem
        enforced = (
            self.cfg.reject_invalid_helo if reason == "fqdn.helo_invalid" else self.cfg.reject_non_fqdn_helo
        )
        return Result(Outcome.FAIL if enforced else Outcome.PASS, reason, detail, data)

    async def _check_sender(self, sender: str) -> Result:
        if not sender:
            return Result.skipped("null sender")
        domain = sender_domain(sender)
        if domain.startswith("[") and domain.endswith("]"):
            return Result.passed(f"sender domain {domain} is an address literal", domain=domain)
        problem = sender_domain_problem(domain)
        if problem:
            detail = f"<{sender}>: domain {domain!r} {problem}"
            outcome = Outcome.FAIL if self.cfg.reject_non_fqdn_sender else Outcome.PASS
            return Result(outcome, "fqdn.sender_not_fqdn", detail, {"domain": domain})
        reason, detail = await self.sender_domain_status(domain)
        if not reason:
            return Result.passed(detail, domain=domain)
        if reason == "fqdn.sender_domain_temperror":
            return Result(Outcome.TEMPERROR, reason, detail, {"domain": domain})
        outcome = Outcome.FAIL if self.cfg.reject_unknown_sender_domain else Outcome.PASS
        return Result(outcome, reason, detail, {"domain": domain})

    async def sender_domain_status(self, domain: str) -> tuple[str, str]:
        """("", detail) if the domain can receive mail replies, else (reason, detail).

        MX first, alone: almost every sender domain has one (usually a cached answer, no task, no query),
        and a domain that does not exist ends there too. Only otherwise A and AAAA, together.
        """
        mx = await self._records(domain, "MX")
        if isinstance(mx, list) and mx:
            if all(rdata.exchange == dns.name.root for rdata in mx):
                return "fqdn.sender_domain_unknown", f"{domain} has a null MX: it accepts no mail"
            return "", f"{domain} has MX records"
        if isinstance(mx, dns.resolver.NXDOMAIN):
            return "fqdn.sender_domain_unknown", f"{domain}: domain does not exist"
        a, aaaa = await asyncio.gather(self._records(domain, "A"), self._records(domain, "AAAA"))
        if any(isinstance(r, list) and r for r in (a, aaaa)):
            return "", f"{domain} has no MX but has an address record"
        if any(isinstance(r, dns.resolver.NXDOMAIN) for r in (mx, a, aaaa)):
            return "fqdn.sender_domain_unknown", f"{domain}: domain does not exist"
        failures = [r for r in (mx, a, aaaa) if isinstance(r, dns.exception.DNSException)]
        if failures:
            first = failures[0]
            log.info("sender domain lookup failed", extra={"domain": domain, "error": str(first)})
            return "fqdn.sender_domain_temperror", f"{domain}: {type(first).__name__}"
        return "fqdn.sender_domain_unknown", f"{domain} has no MX, A or AAAA record"

    async def _records(self, name: str, rdtype: str) -> list[Any] | dns.exception.DNSException:
        """The records, [] for NODATA, or the exception for NXDOMAIN and failures."""
        try:
            answer = await self.resolver.resolve(name.rstrip(".") + ".", rdtype, search=False)
        except dns.resolver.NoAnswer:
            return []
        except dns.exception.DNSException as exc:
            return exc
        return list(answer)

    async def forward_confirmed_reverse_name(self, peer_ip: str) -> tuple[str, str]:
        """(name, detail): the PTR name that resolves back to the client's address, or "" and why not."""
        try:
            address = ipaddress.ip_address(peer_ip)
        except ValueError:
            return "", "reverse DNS not checked: no client IP address"
        ptr = await self._records(dns.reversename.from_address(str(address)).to_text(), "PTR")
        if isinstance(ptr, dns.exception.DNSException):
            if isinstance(ptr, dns.resolver.NXDOMAIN):
                return "", f"no reverse DNS for {address}"
            return "", f"reverse DNS lookup failed: {type(ptr).__name__}"
        names = [rdata.target.to_text(omit_final_dot=True) for rdata in ptr][:MAX_PTR_NAMES]
        if not names:
            return "", f"no reverse DNS for {address}"
        rdtype = "A" if address.version == 4 else "AAAA"
        forwards = await asyncio.gather(*(self._records(name, rdtype) for name in names))
        for name, records in zip(names, forwards, strict=True):
            if isinstance(records, list) and any(ipaddress.ip_address(r.address) == address for r in records):
                return name, f"reverse DNS {name} (forward-confirmed)"
        return "", f"reverse DNS {', '.join(names)} does not resolve back to {address}"


def build(cfg: FqdnConfig, deps: FilterDeps) -> Filter:
    return FqdnFilter(cfg, deps)
