"""One webhook POST, classified as Delivered, Retry or Permanent.

The delivery runner decides what to do with the outcome (schedule, dead-letter); this module only makes the
attempt. Every remote fault — refused, reset, slow, malformed, any status — becomes an outcome, never an
exception, so one misbehaving helpdesk cannot crash the runner.

The attempt is bounded as a whole: httpx bounds each phase (connect, write, each read, waiting for a pooled
connection) and an overall deadline stops a server that trickles bytes just fast enough to defeat the read
timeout. Redirects are not followed (a redirected webhook is a configuration error to fix, not something to
chase with a signed ticket), and at most `max_response_bytes` of the response body are read.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx

from inbound.signing import SIGNATURE_HEADER, sign

log = logging.getLogger("postroom.webhook")

EXCERPT_CHARS = 500
# A Retry-After beyond this is treated as this: a bogus header must not park a message for a year.
MAX_RETRY_AFTER = 86400.0
RETRY_STATUSES = frozenset({408, 429})


def _user_agent() -> str:
    try:
        version = importlib.metadata.version("postroom")
    except importlib.metadata.PackageNotFoundError:
        version = "dev"
    return f"postroom/{version}"


USER_AGENT = _user_agent()


@dataclass(frozen=True)
class Delivered:
    status: int
    ms: float


@dataclass(frozen=True)
class Retry:
    reason: str
    status: int | None
    retry_after: float | None
    excerpt: str
    ms: float


@dataclass(frozen=True)
class Permanent:
    reason: str
    status: int
    excerpt: str
    ms: float


Outcome = Delivered | Retry | Permanent


class WebhookClient:
    """Posts signed tickets over keep-alive HTTP/1.1 connections, at most `max_connections` at once."""

    def __init__(
        self,
        url: str,
        secret: str,
        *,
        timeout: float,
        max_response_bytes: int,
        max_connections: int = 64,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._secret = secret
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        self._clock = clock
        # One single-connection client per concurrent attempt, handed out LIFO (the warmest connection first).
        # httpcore's pool scans every connection, with a poll() and getpeername() each, on every request
        # event; one shared pool of 32 connections made that scan the runner's main cost (~half its CPU).
        # Clients are made on first need and share one TLS context (each context loads the CA bundle).
        self._idle: asyncio.LifoQueue[httpx.AsyncClient] = asyncio.LifoQueue()
        self._clients: list[httpx.AsyncClient] = []
        self._max_clients = max_connections
        self._transport = transport  # tests inject faults; all slots then share it
        self._tls: ssl.SSLContext | None = None

    async def _acquire(self) -> httpx.AsyncClient:
        if self._idle.empty() and len(self._clients) < self._max_clients:
            client = self._make_client()
            self._clients.append(client)
            return client
        return await self._idle.get()

    def _make_client(self) -> httpx.AsyncClient:
        transport = self._transport
        if transport is None:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            transport = httpx.AsyncHTTPTransport(verify=self._tls, limits=limits, http1=True, http2=False)
        return httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self._timeout),
            follow_redirects=False,
            # The URL is explicit configuration: proxy variables in the environment must not reroute it.
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
        )

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        if self._transport is not None:
            await self._transport.aclose()

    async def post(
        self, body: bytes, *, ticket_id: str, tenant: str, attempt: int, url: str | None = None
    ) -> Outcome:
        """POST one JSON ticket. `ticket_id` is the Idempotency-Key: the same on every retry and replay."""
        headers = {
            "Content-Type": "application/json",
            # Uncompressed, so the response cap counts the bytes actually received.
            "Accept-Encoding": "identity",
            SIGNATURE_HEADER: sign(self._secret, body, int(self._clock())),
            "Idempotency-Key": ticket_id,
            "X-Postroom-Attempt": str(attempt),
            "X-Postroom-Tenant": tenant,
        }
        client = await self._acquire()  # waiting for a free slot is not part of the attempt's deadline
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                status, response_headers, head = await self._exchange(client, url or self._url, body, headers)
        except (TimeoutError, httpx.TimeoutException):
            outcome: Outcome = Retry("timeout", None, None, "", _elapsed_ms(started))
        except httpx.ConnectError as exc:
            outcome = Retry("connect error", None, None, _printable(str(exc)), _elapsed_ms(started))
        except httpx.RemoteProtocolError as exc:
            outcome = Retry("protocol error", None, None, _printable(str(exc)), _elapsed_ms(started))
        except httpx.HTTPError as exc:
            # Read/write errors (reset, broken pipe) and anything else the transport raises.
            detail = f"{type(exc).__name__}: {exc}"
            outcome = Retry("network error", None, None, _printable(detail), _elapsed_ms(started))
        else:
            outcome = self._classify(status, response_headers, head, _elapsed_ms(started))
        finally:
            self._idle.put_nowait(client)
        _log_outcome(outcome, ticket_id=ticket_id, tenant=tenant, attempt=attempt)
        return outcome

    async def _exchange(
        self, client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, httpx.Headers, bytes]:
        """Send the request; return the status, headers and at most `max_response_bytes` of the body."""
        async with client.stream("POST", url, content=body, headers=headers) as response:
            head = bytearray()
            async for chunk in response.aiter_raw():
                head += chunk
                if len(head) >= self._max_response_bytes:
                    # Leaving the block unread closes this connection instead of returning it to the pool.
                    del head[self._max_response_bytes :]
                    break
            return response.status_code, response.headers, bytes(head)

    def _classify(self, status: int, headers: httpx.Headers, head: bytes, ms: float) -> Outcome:
        if 200 <= status < 300:
            return Delivered(status, ms)
        excerpt = _printable(head.decode("utf-8", errors="replace"))
        if 300 <= status < 400:
            location = _printable(headers.get("Location", ""))
            return Permanent("unexpected redirect", status, f"Location: {location} {excerpt}".strip(), ms)
        if status in RETRY_STATUSES or status >= 500:
            retry_after = parse_retry_after(headers.get("Retry-After"), now=self._clock())
            return Retry(f"http {status}", status, retry_after, excerpt, ms)
        return Permanent(f"http {status}", status, excerpt, ms)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date), bounded; None if absent or invalid."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = float(value)
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # "-0000" in the date: RFC 5322 says unknown zone; HTTP dates are UTC.
            return None
        seconds = when.timestamp() - now
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _printable(text: str) -> str:
    """At most EXCERPT_CHARS of `text` on one line, safe for logs and the dead-letter record."""
    clipped = text[: EXCERPT_CHARS * 2]
    return " ".join("".join(ch if ch.isprintable() else " " for ch in clipped).split())[:EXCERPT_CHARS]


def _elapsed_ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _log_outcome(outcome: Outcome, *, ticket_id: str, tenant: str, attempt: int) -> None:
    if isinstance(outcome, Delivered) and not log.isEnabledFor(logging.DEBUG):
        return  # the hot path: skip building the record nobody will see
    extra: dict[str, object] = {
        "queue_id": ticket_id,
        "tenant": tenant,
        "attempt": attempt,
        "outcome": type(outcome).__name__.lower(),
        "elapsed_ms": round(outcome.ms, 1),
    }
    if isinstance(outcome, Delivered):
        log.debug("webhook delivered (%s)", outcome.status, extra={**extra, "status": outcome.status})
        return
    extra.update(status=outcome.status, reason=outcome.reason, excerpt=outcome.excerpt)
    log.info("webhook %s: %s", extra["outcome"], outcome.reason, extra=extra)
