"""DNS resolvers built from `[dns]`, and a small TTL cache for filters that cache interpreted answers.

The system resolver configuration (/etc/resolv.conf) cannot name a port and may point anywhere, so when
`[dns] nameservers` is set Postroom never reads it: every lookup goes to the configured host:port list.
Blocking libraries (pyspf, dkimpy) run in worker threads and need a synchronous resolver; `sync_twin` gives
them one with exactly the same servers and time limits as the asyncio resolver the listener injected.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import dns.asyncresolver
import dns.message
import dns.nameserver
import dns.rdatatype
import dns.resolver

from inbound.config import DnsConfig, parse_hostport

# dnspython's default per-attempt timeout; the whole lookup is bounded by `lifetime` (cfg.timeout).
_ATTEMPT_TIMEOUT = 2.0
# When a negative answer carries no SOA (a broken server), cache it this long.
DEFAULT_NEGATIVE_TTL = 60.0


def parse_nameserver(value: str, key: str = "nameservers") -> dns.nameserver.Do53Nameserver:
    """'127.0.0.1:5353', '[::1]:5353' or a bare address (port 53)."""
    host, port = parse_hostport(value, key, default_port=53)
    return dns.nameserver.Do53Nameserver(host, port)


def make_resolver(cfg: DnsConfig) -> dns.asyncresolver.Resolver:
    """The asyncio resolver every filter uses: configured servers only, each lookup bounded by cfg.timeout."""
    if cfg.nameservers:
        resolver = dns.asyncresolver.Resolver(configure=False)
        resolver.nameservers = [
            parse_nameserver(server, f"nameservers[{i}]") for i, server in enumerate(cfg.nameservers)
        ]
    else:
        resolver = dns.asyncresolver.Resolver(configure=True)
    _apply_timeouts(resolver, cfg.timeout)
    if cfg.cache_size:
        # The same sender domains, HELO names and client addresses come back message after message; a cache
        # hit skips the query and dnspython's parsing of the answer (~0.5 ms of CPU per lookup).
        resolver.cache = dns.resolver.LRUCache(cfg.cache_size)
    return resolver


def sync_twin(resolver: dns.resolver.BaseResolver) -> dns.resolver.Resolver:
    """A blocking resolver with the same servers, search settings and time limits, for worker threads."""
    twin = dns.resolver.Resolver(configure=False)
    twin.nameservers = list(resolver.nameservers)
    twin.domain = resolver.domain
    twin.search = list(resolver.search)
    twin.use_search_by_default = resolver.use_search_by_default
    twin.timeout = resolver.timeout
    twin.lifetime = resolver.lifetime
    twin.cache = resolver.cache  # dnspython's caches are thread-safe: the twin shares the answers
    return twin


def uncached(resolver: dns.asyncresolver.Resolver) -> dns.asyncresolver.Resolver:
    """The same servers and limits without the shared answer cache, for a filter that caches by itself (and
    whose health probes must reach the server)."""
    twin = dns.asyncresolver.Resolver(configure=False)
    twin.nameservers = list(resolver.nameservers)
    twin.domain = resolver.domain
    twin.search = list(resolver.search)
    twin.use_search_by_default = resolver.use_search_by_default
    twin.timeout = resolver.timeout
    twin.lifetime = resolver.lifetime
    return twin


def _apply_timeouts(resolver: dns.resolver.BaseResolver, lifetime: float) -> None:
    resolver.lifetime = lifetime
    resolver.timeout = min(_ATTEMPT_TIMEOUT, lifetime)


def negative_ttl(exc: dns.resolver.NXDOMAIN | dns.resolver.NoAnswer) -> float:
    """How long a negative answer may be cached (RFC 2308: min of the SOA's TTL and its MINIMUM field)."""
    # The exceptions carry the server's responses in `kwargs` (their accessor methods are untyped).
    if isinstance(exc, dns.resolver.NXDOMAIN):
        responses: list[dns.message.Message] = list(exc.kwargs.get("responses", {}).values())
    else:
        responses = [exc.kwargs["response"]] if exc.kwargs.get("response") is not None else []
    ttls = [
        min(rrset.ttl, rdata.minimum)
        for response in responses
        for rrset in response.authority
        if rrset.rdtype == dns.rdatatype.SOA
        for rdata in rrset
    ]
    return float(min(ttls)) if ttls else DEFAULT_NEGATIVE_TTL


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TtlCache(Generic[K, V]):
    """A bounded cache whose entries expire after their own TTL; the least recently used entry goes first.

    The clock is injected (a monotonic function) so tests can expire entries without sleeping.
    """

    def __init__(self, max_entries: int, clock: Callable[[], float], max_ttl: float = 3600.0) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max_entries = max_entries
        self._max_ttl = max_ttl
        self._clock = clock

    def get(self, key: K) -> V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V, ttl: float) -> None:
        ttl = min(ttl, self._max_ttl)
        if ttl <= 0:
            return
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)
