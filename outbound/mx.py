"""Where to send mail for a domain: MX lookup (RFC 5321 §5.1) with the RFC 7505 null MX, or a smarthost.

The result is an ordered list of `MxTarget`s (host name for TLS SNI and logs, IP address to connect to).
MX records are tried by preference; records of equal preference are shuffled so that load spreads over
them, as RFC 5321 asks. A domain without MX records is its own implicit MX (its A/AAAA records).

Failures are classified the way a sender must act on them:
- permanent (`MxLookupError.permanent`): the domain does not exist (NXDOMAIN), it publishes a null MX
  ("0 ."), or it has neither MX nor address records. The message bounces.
- temporary: SERVFAIL, timeouts, MX hosts whose addresses cannot be resolved. The message is retried.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from postroom.core.configload import parse_hostport

log = logging.getLogger("postroom.outbound.mx")

# IPv4 first: a relay whose IPv6 reverse DNS or reputation is not set up loses less that way.
_ADDRESS_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA)


@dataclass(frozen=True)
class MxTarget:
    hostname: str  # the MX name (or smarthost name), for TLS server_hostname and logs
    address: str  # the IP to connect to
    port: int
    preference: int = 0


class MxLookupError(Exception):
    def __init__(self, message: str, *, permanent: bool, status: str = "") -> None:
        super().__init__(message)
        self.permanent = permanent
        # RFC 3463 status for the DSN or log: bad destination system (5.1.2), null MX (RFC 7505: 5.1.10),
        # directory server failure (4.4.3).
        self.status = status or ("5.1.2" if permanent else "4.4.3")


async def resolve_targets(
    domain: str,
    resolver: dns.asyncresolver.Resolver,
    *,
    port: int,
    smarthost: str = "",
    rng: random.Random | None = None,
) -> list[MxTarget]:
    """The hosts to try for `domain`, best first; raises MxLookupError."""
    if smarthost:
        host, smarthost_port = parse_hostport(smarthost, "outbound.smarthost", default_port=port)
        return [MxTarget(host, address, smarthost_port) for address in await _addresses(host, resolver)]
    exchanges = await _mx_records(domain, resolver)
    if exchanges is None:
        # No MX: the domain itself is the implicit MX (RFC 5321 §5.1).
        addresses = await _addresses(domain, resolver, missing_is_permanent=True)
        return [MxTarget(domain, address, port) for address in addresses]
    ordered = order_by_preference(exchanges, rng or random.Random())
    results = await asyncio.gather(
        *(_addresses(name, resolver) for _, name in ordered), return_exceptions=True
    )
    targets: list[MxTarget] = []
    errors: list[str] = []
    for (preference, name), result in zip(ordered, results, strict=True):
        if isinstance(result, BaseException):
            if not isinstance(result, MxLookupError):
                raise result
            errors.append(str(result))
            continue
        targets.extend(MxTarget(name, address, port, preference) for address in result)
    if not targets:
        raise MxLookupError(f"no usable MX host for {domain}: {'; '.join(errors)}", permanent=False)
    return targets


def order_by_preference(records: Sequence[tuple[int, str]], rng: random.Random) -> list[tuple[int, str]]:
    """Sort by preference, shuffling records of equal preference."""
    shuffled = list(records)
    rng.shuffle(shuffled)
    return sorted(shuffled, key=lambda record: record[0])  # sorted() is stable: the shuffle survives ties


async def _mx_records(domain: str, resolver: dns.asyncresolver.Resolver) -> list[tuple[int, str]] | None:
    """(preference, exchange) pairs; None when the domain has no MX records."""
    try:
        answer = await resolver.resolve(domain, dns.rdatatype.MX, search=False)
    except dns.resolver.NoAnswer:
        return None
    except dns.resolver.NXDOMAIN:
        raise MxLookupError(f"domain {domain} does not exist", permanent=True) from None
    except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
        raise MxLookupError(f"MX lookup for {domain} failed: {exc}", permanent=False) from None
    records = [(int(r.preference), r.exchange) for r in answer]
    if any(exchange == dns.name.root for _, exchange in records):
        # RFC 7505: a null MX says the domain accepts no mail at all.
        raise MxLookupError(f"domain {domain} accepts no mail (null MX)", permanent=True, status="5.1.10")
    return [(preference, exchange.to_text(omit_final_dot=True)) for preference, exchange in records]


async def _addresses(
    host: str, resolver: dns.asyncresolver.Resolver, *, missing_is_permanent: bool = False
) -> list[str]:
    """A then AAAA addresses of `host`; an IP literal is returned as is."""
    if _is_ip_literal(host):
        return [host]
    addresses: list[str] = []
    temporary: list[str] = []
    nxdomain = False
    for rdtype in _ADDRESS_TYPES:
        try:
            answer = await resolver.resolve(host, rdtype, search=False)
        except dns.resolver.NoAnswer:
            continue
        except dns.resolver.NXDOMAIN:
            nxdomain = True
            break
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            temporary.append(str(exc))
            continue
        addresses.extend(r.address for r in answer)
    if addresses:
        return addresses
    if temporary:
        raise MxLookupError(f"address lookup for {host} failed: {temporary[0]}", permanent=False)
    reason = "does not exist" if nxdomain else "has no MX, A or AAAA record"
    raise MxLookupError(f"{host} {reason}", permanent=missing_is_permanent)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
