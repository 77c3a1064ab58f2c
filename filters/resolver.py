"""DNS resolvers built from `[dns]`, and a small TTL cache for filters that cache interpreted answers.

The system resolver configuration (/etc/resolv.conf) cannot name a port and may point anywhere, so when
`[dns] nameservers` is set Postroom never reads it: every lookup goes to the configured host:port list.
Blocking libraries (pyspf, dkimpy) run in worker threads and need a synchronous resolver; `sync_twin` gives
them one with exactly the same servers and time limits as the asyncio resolver the listener injected.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

import dns.asyncresolver
import dns.message
import dns.name
import dns.nameserver
import dns.rdataclass
import dns.rdatatype
import dns.resolver

from postroom.core.config import DnsConfig
from postroom.core.configload import parse_hostport

# dnspython's default per-attempt timeout; the whole lookup is bounded by `lifetime` (cfg.timeout).
_ATTEMPT_TIMEOUT = 2.0
# When a negative answer carries no SOA (a broken server), cache it this long.
DEFAULT_NEGATIVE_TTL = 60.0


def parse_nameserver(value: str, key: str = "nameservers") -> dns.nameserver.Do53Nameserver:
    """'127.0.0.1:5353', '[::1]:5353' or a bare address (port 53)."""
    host, port = parse_hostport(value, key, default_port=53)
    return dns.nameserver.Do53Nameserver(host, port)


class FrontCachedResolver(dns.asyncresolver.Resolver):
    """dnspython's asyncio resolver with a dict of live positive answers in front of its LRU cache.

    A hit in dnspython's own cache still parses the name, builds a resolution and copies through its
    locks, several times a message with the cheap filters. Here a hit is one dict lookup, valid until the
    answer's own expiration (its TTL, as dnspython computed it). A negative answer (NXDOMAIN, NoAnswer) is
    kept too, for its RFC 2308 TTL, and raised as a new exception on every hit: DMARC asks for
    `_dmarc.<domain>` twice a message and most domains have none. Figures in docs/benchmark.md. Misses go to
    dnspython unchanged. Bounded: at
    `max_entries` the dict starts over (the LRU cache behind still holds).
    """

    def __init__(self, *, configure: bool, max_entries: int, clock: Callable[[], float] = time.time) -> None:
        super().__init__(configure=configure)
        self._front: dict[tuple[object, ...], dns.resolver.Answer | _Negative] = {}
        self._front_max = max_entries
        self._clock = clock

    async def resolve(  # the same parameters as dnspython's, spelled out for the key
        self,
        qname: dns.name.Name | str,
        rdtype: dns.rdatatype.RdataType | str = dns.rdatatype.A,
        rdclass: dns.rdataclass.RdataClass | str = dns.rdataclass.IN,
        tcp: bool = False,
        source: str | None = None,
        raise_on_no_answer: bool = True,
        source_port: int = 0,
        lifetime: float | None = None,
        search: bool | None = None,
        backend: Any = None,
    ) -> dns.resolver.Answer:
        key = (str(qname).lower(), rdtype, rdclass, tcp, raise_on_no_answer, search)
        known = self._front.get(key)
        if known is not None and known.expiration > self._clock():
            if isinstance(known, _Negative):
                raise known.fresh()
            return known
        keep = source is None and not source_port
        try:
            answer = await super().resolve(
                qname, rdtype, rdclass, tcp, source, raise_on_no_answer, source_port, lifetime, search,
                backend,
            )  # fmt: skip
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer) as exc:
            # One name asked (no search list): the answer is about exactly this key.
            if keep and len(exc.kwargs.get("qnames", [qname])) == 1:
                self._keep(key, _Negative(exc, self._clock() + negative_ttl(exc)))
            raise
        if answer.rrset is not None and keep:
            self._keep(key, answer)
        return answer

    def _keep(self, key: tuple[object, ...], entry: dns.resolver.Answer | _Negative) -> None:
        if len(self._front) >= self._front_max:
            self._front.clear()
        self._front[key] = entry


class _Negative:
    """A negative answer in the front cache. Each hit raises a new exception: one object raised again and
    again would grow its traceback and chain it to whatever its callers were handling."""

    __slots__ = ("exc", "expiration")

    def __init__(self, exc: dns.resolver.NXDOMAIN | dns.resolver.NoAnswer, expiration: float) -> None:
        self.exc = exc
        self.expiration = expiration

    def fresh(self) -> dns.resolver.NXDOMAIN | dns.resolver.NoAnswer:
        # dnspython's exception constructors and accessors are untyped.
        kwargs = self.exc.kwargs
        if isinstance(self.exc, dns.resolver.NXDOMAIN):
            return dns.resolver.NXDOMAIN(qnames=kwargs["qnames"], responses=kwargs["responses"])  # type: ignore[no-untyped-call]
        return dns.resolver.NoAnswer(response=kwargs["response"])  # type: ignore[no-untyped-call]


def make_resolver(cfg: DnsConfig) -> dns.asyncresolver.Resolver:
    """The asyncio resolver every filter uses: configured servers only, each lookup bounded by cfg.timeout."""
    configure = not cfg.nameservers  # /etc/resolv.conf only when no servers are configured
    if cfg.cache_size:
        resolver: dns.asyncresolver.Resolver = FrontCachedResolver(
            configure=configure, max_entries=cfg.cache_size
        )
    else:
        resolver = dns.asyncresolver.Resolver(configure=configure)
    if cfg.nameservers:
        resolver.nameservers = [
            parse_nameserver(server, f"nameservers[{i}]") for i, server in enumerate(cfg.nameservers)
        ]
    _apply_timeouts(resolver, cfg.timeout)
    if cfg.cache_size:
        # The same sender domains, HELO names and client addresses come back message after message; a cache
        # hit skips the query and dnspython's parsing of the answer.
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
