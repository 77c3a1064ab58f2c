"""One webhook POST, classified as Delivered, Retry or Permanent.

The delivery runner decides what to do with the outcome (schedule, dead-letter); this module only makes the
attempt. Every remote fault — refused, reset, slow, malformed, any status — becomes an outcome, never an
exception, so one misbehaving helpdesk cannot crash the runner.

The attempt is bounded as a whole: one deadline covers connecting, sending and reading, so a server that
trickles bytes cannot stretch it. Redirects are not followed (a redirected webhook is a configuration error to
fix, not something to chase with a signed ticket), and at most `max_response_bytes` of the response body are
read.

It delivers with httpx: each attempt is an `httpx.Request`, answered by an `httpx.Response`, through httpx's
transport interface and exception hierarchy. Only the connection layer is ours (`postroom.core.httpclient`),
called directly rather than through `httpx.AsyncClient`, for measured speed: AsyncClient and httpcore were
most of the runner's CPU per message (figures in docs/benchmark.md).
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

from postroom.core.httpclient import KeepAliveTransport, TransportSlots, body_request
from postroom.core.signing import SIGNATURE_HEADER, sign

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
_FIXED_HEADERS = (
    (b"User-Agent", USER_AGENT.encode()),
    (b"Content-Type", b"application/json"),
    # Uncompressed, so the response cap counts the bytes actually received.
    (b"Accept-Encoding", b"identity"),
)
_SIGNATURE_FIELD = SIGNATURE_HEADER.encode("ascii")


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


# What one POST came to. (A filter's `filters.base.Outcome` is another thing: pass, fail, temperror, skip.)
WebhookAnswer = Delivered | Retry | Permanent


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
        self._url = httpx.URL(url)  # parsed once; a per-post `url=` is parsed per post
        self._secret = secret
        self._timeout = timeout
        self._max_response_bytes = max_response_bytes
        self._clock = clock
        # One single-connection transport ("slot") per concurrent attempt (see TransportSlots), sharing one
        # TLS context (each context loads the CA bundle). No AsyncClient: nothing of it is wanted here (no
        # redirects, cookies, auth or proxies from the environment), and it costs CPU on every request.
        self._transport = transport  # tests inject faults; all slots then share it
        self._tls: ssl.SSLContext | None = None
        self._slots = TransportSlots(self._make_slot, max_connections)

    def _make_slot(self) -> httpx.AsyncBaseTransport:
        if self._transport is not None:
            return self._transport
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return KeepAliveTransport(max_response_bytes=self._max_response_bytes, ssl_context=self._tls)

    async def aclose(self) -> None:
        if self._transport is not None:
            await self._transport.aclose()  # every slot is this one transport
        else:
            await self._slots.aclose()

    async def post(
        self, body: bytes, *, ticket_id: str, tenant: str, attempt: int, url: str | None = None
    ) -> WebhookAnswer:
        """POST one JSON ticket. `ticket_id` is the Idempotency-Key: the same on every retry and replay."""
        headers = [
            *_FIXED_HEADERS,
            (_SIGNATURE_FIELD, sign(self._secret, body, int(self._clock())).encode("ascii")),
            (b"Idempotency-Key", ticket_id.encode()),
            (b"X-Postroom-Attempt", b"%d" % attempt),
            (b"X-Postroom-Tenant", tenant.encode()),
        ]
        request = body_request(httpx.URL(url) if url else self._url, body, headers)
        slot = await self._slots.acquire()  # waiting for a free slot is not part of the attempt's deadline
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                status, response_headers, head = await self._exchange(slot, request)
        except (TimeoutError, httpx.TimeoutException):
            outcome: WebhookAnswer = Retry("timeout", None, None, "", _elapsed_ms(started))
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
            self._slots.release(slot)
        _log_outcome(outcome, ticket_id=ticket_id, tenant=tenant, attempt=attempt)
        return outcome

    async def _exchange(
        self, slot: httpx.AsyncBaseTransport, request: httpx.Request
    ) -> tuple[int, httpx.Headers, bytes]:
        """Send the request; return the status, headers and at most `max_response_bytes` of the body.

        Redirects are not followed: the transport API answers exactly the request it is given.
        """
        response = await slot.handle_async_request(request)
        try:
            return response.status_code, response.headers, await self._read_capped(response)
        finally:
            # Releases a streamed body left unread; KeepAliveTransport has already decided about reuse.
            await response.aclose()

    async def _read_capped(self, response: httpx.Response) -> bytes:
        if response.is_stream_consumed:  # built with content= (httpx.MockTransport): already in memory
            return response.content[: self._max_response_bytes]
        head = bytearray()
        async for chunk in response.aiter_raw():
            head += chunk
            if len(head) >= self._max_response_bytes:
                del head[self._max_response_bytes :]
                break
        return bytes(head)

    def _classify(self, status: int, headers: httpx.Headers, head: bytes, ms: float) -> WebhookAnswer:
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


def _log_outcome(outcome: WebhookAnswer, *, ticket_id: str, tenant: str, attempt: int) -> None:
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
