"""One webhook attempt against a real HTTP receiver on loopback, and how each answer is classified."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from email.utils import formatdate
from typing import Any

import httpx
import orjson
import pytest

from inbound.delivery.webhook import (
    MAX_RETRY_AFTER,
    Delivered,
    Permanent,
    Retry,
    WebhookClient,
    parse_retry_after,
)
from postroom.core.signing import SIGNATURE_HEADER, verify
from postroom.helpdesk.receiver import ReceivedTicket, Response, TicketReceiver

SECRET = "webhook-test-secret"
TICKET = {"schema": "postroom.ticket/1", "id": "Q-1", "tenant": "acme", "mailbox": "support", "subject": "Hi"}
BODY = orjson.dumps(TICKET)


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=30))


@contextlib.asynccontextmanager
async def helpdesk(
    respond_with: Callable[[ReceivedTicket], Response] | None = None,
    *,
    timeout: float = 5.0,
    max_response_bytes: int = 64 * 1024,
    max_connections: int = 64,
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[tuple[TicketReceiver, WebhookClient]]:
    receiver = TicketReceiver(SECRET, respond_with=respond_with)
    await receiver.start()
    client = WebhookClient(
        receiver.url,
        SECRET,
        timeout=timeout,
        max_response_bytes=max_response_bytes,
        max_connections=max_connections,
        clock=clock,
    )
    try:
        yield receiver, client
    finally:
        await client.aclose()
        await receiver.stop()


async def post(client: WebhookClient, attempt: int = 1, ticket_id: str = "Q-1") -> Any:
    return await client.post(BODY, ticket_id=ticket_id, tenant="acme", attempt=attempt)


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None, **kw: Any) -> Any:
    response = Response(status, body, headers or {}, **kw)
    return lambda ticket: response


def test_2xx_is_delivered_with_a_signed_request_carrying_every_header() -> None:
    async def scenario() -> None:
        async with helpdesk() as (receiver, client):
            outcome = await post(client, attempt=3)
            assert isinstance(outcome, Delivered)
            assert outcome.status == 200
            (ticket,) = receiver.tickets
            assert ticket.signature_ok
            assert ticket.payload == TICKET
            assert ticket.body == BODY
            assert verify(SECRET, ticket.body, ticket.headers[SIGNATURE_HEADER.lower()], now=time.time())
            assert ticket.headers["content-type"] == "application/json"
            assert ticket.idempotency_key == "Q-1"
            assert ticket.attempt == 3
            assert ticket.tenant == "acme"
            assert ticket.headers["user-agent"].startswith("postroom/")

    run(scenario)


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_every_2xx_is_delivered(status: int) -> None:
    async def scenario() -> None:
        async with helpdesk(answer(status)) as (_, client):
            outcome = await post(client)
            assert isinstance(outcome, Delivered)
            assert outcome.status == status

    run(scenario)


@pytest.mark.parametrize("status", [500, 502, 503, 408])
def test_server_errors_and_request_timeout_are_retried_with_the_answer_excerpt(status: int) -> None:
    async def scenario() -> None:
        async with helpdesk(answer(status, b'{"error": "database unavailable"}')) as (_, client):
            outcome = await post(client)
            assert isinstance(outcome, Retry)
            assert (outcome.reason, outcome.status, outcome.retry_after) == (f"http {status}", status, None)
            assert outcome.excerpt == '{"error": "database unavailable"}'

    run(scenario)


def test_429_with_retry_after_seconds_is_retried_after_that_delay() -> None:
    async def scenario() -> None:
        async with helpdesk(answer(429, b"slow down", {"Retry-After": "120"})) as (_, client):
            outcome = await post(client)
            assert isinstance(outcome, Retry)
            assert (outcome.reason, outcome.status, outcome.retry_after) == ("http 429", 429, 120)

    run(scenario)


def test_429_with_retry_after_http_date_is_converted_against_the_client_clock() -> None:
    now = float(int(time.time()))
    retry_at = formatdate(now + 90, usegmt=True)

    async def scenario() -> None:
        async with helpdesk(answer(429, b"", {"Retry-After": retry_at}), clock=lambda: now) as (_, client):
            outcome = await post(client)
            assert isinstance(outcome, Retry)
            assert outcome.retry_after == 90

    run(scenario)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("0", 0),
        (" 45 ", 45),
        ("99999999", MAX_RETRY_AFTER),
        ("Thu, 01 Jan 2026 00:02:00 GMT", 120),
        ("Wed, 31 Dec 2025 23:00:00 GMT", 0),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("Thu, 01 Jan 2026 00:02:00 -0000", None),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    new_year_2026 = 1767225600.0
    assert parse_retry_after(header, now=new_year_2026) == expected


@pytest.mark.parametrize("status", [400, 404, 422, 410])
def test_other_client_errors_are_permanent_with_the_answer_excerpt(status: int) -> None:
    async def scenario() -> None:
        async with helpdesk(answer(status, b'{"error": "unknown tenant acme"}')) as (_, client):
            outcome = await post(client)
            assert outcome == Permanent(
                f"http {status}", status, '{"error": "unknown tenant acme"}', outcome.ms
            )

    run(scenario)


def test_a_wrong_secret_is_refused_by_the_receiver_and_permanent() -> None:
    async def scenario() -> None:
        async with helpdesk() as (receiver, _):
            wrong = WebhookClient(receiver.url, "not-the-secret", timeout=5, max_response_bytes=1024)
            try:
                outcome = await wrong.post(BODY, ticket_id="Q-1", tenant="acme", attempt=1)
            finally:
                await wrong.aclose()
            assert isinstance(outcome, Permanent)
            assert outcome.status == 401
            assert [t.signature_ok for t in receiver.tickets] == [False]

    run(scenario)


def test_excerpt_is_one_printable_line_of_at_most_500_characters() -> None:
    noisy = b"line one\r\n\x00\x1b[31mred\ttab " + "é".encode() * 3000

    async def scenario() -> None:
        async with helpdesk(answer(400, noisy)) as (_, client):
            outcome = await post(client)
            assert isinstance(outcome, Permanent)
            assert outcome.excerpt.startswith("line one [31mred tab éé")
            assert len(outcome.excerpt) == 500
            assert outcome.excerpt.isprintable()

    run(scenario)


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirects_are_not_followed_and_are_permanent(status: int) -> None:
    async def scenario() -> None:
        async with helpdesk() as (receiver, client):
            receiver.respond_with = answer(status, b"", {"Location": receiver.url + "/moved"})
            outcome = await post(client)
            assert isinstance(outcome, Permanent)
            assert (outcome.reason, outcome.status) == ("unexpected redirect", status)
            assert receiver.url + "/moved" in outcome.excerpt
            assert len(receiver.tickets) == 1

    run(scenario)


def test_a_hanging_server_is_a_timeout_retry_within_the_bound() -> None:
    async def scenario() -> None:
        async with helpdesk(answer(200, delay=10), timeout=0.5) as (_, client):
            outcome = await post(client)
            assert isinstance(outcome, Retry)
            assert outcome.reason == "timeout"
            assert outcome.ms < 5000  # bounded by the 0.5 s timeout, far below the 10 s hang

    run(scenario)


def test_a_server_trickling_its_answer_is_cut_off_by_the_overall_deadline() -> None:
    # Each chunk arrives well within the per-read timeout; only the overall deadline can stop this.
    trickle = answer(200, b"x" * 200, chunk_size=10, trickle=0.1)

    async def scenario() -> None:
        async with helpdesk(trickle, timeout=0.5, max_response_bytes=1024) as (receiver, client):
            outcome = await post(client)
            assert isinstance(outcome, Retry)
            assert outcome.reason == "timeout"
            assert receiver.tickets[0].bytes_sent > 0  # the server did answer, slowly

    run(scenario)


def test_a_10_mb_answer_is_read_only_up_to_the_cap() -> None:
    # Sent in 64 KiB chunks 20 ms apart: reading all of it would take over 3 s, beyond the 2 s timeout.
    ten_mb = b"x" * (10 * 1024 * 1024)

    async def scenario() -> None:
        async with helpdesk(answer(200, ten_mb, trickle=0.02), timeout=2.0) as (receiver, client):
            outcome = await post(client)
            assert isinstance(outcome, Delivered)
            await asyncio.sleep(0.3)  # let the server notice the hang-up
            assert receiver.tickets[0].bytes_sent < len(ten_mb) // 10

    run(scenario)


def test_a_10_mb_error_answer_yields_a_short_excerpt() -> None:
    async def scenario() -> None:
        async with helpdesk(answer(422, b"y" * (10 * 1024 * 1024))) as (_, client):
            outcome = await post(client)
            assert isinstance(outcome, Permanent)
            assert outcome.excerpt == "y" * 500

    run(scenario)


def test_a_refused_connection_is_retried() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]

    async def scenario() -> None:
        client = WebhookClient(
            f"http://127.0.0.1:{closed_port}/tickets", SECRET, timeout=2, max_response_bytes=1
        )
        try:
            outcome = await post(client)
        finally:
            await client.aclose()
        assert isinstance(outcome, Retry)
        assert (outcome.reason, outcome.status) == ("connect error", None)

    run(scenario)


def test_a_helpdesk_that_goes_down_and_comes_back() -> None:
    async def scenario() -> None:
        async with helpdesk() as (receiver, client):
            assert isinstance(await post(client, attempt=1), Delivered)
            await receiver.stop()
            outcome = await post(client, attempt=2)
            assert isinstance(outcome, Retry)
            assert outcome.reason in {"connect error", "protocol error", "network error"}
            await receiver.start()
            assert isinstance(await post(client, attempt=3), Delivered)
            assert [t.attempt for t in receiver.accepted] == [1, 3]

    run(scenario)


def test_a_connection_reset_instead_of_an_answer_is_retried() -> None:
    async def scenario() -> None:
        async with helpdesk(answer(200, disconnect=True)) as (receiver, client):
            outcome = await post(client)
            assert isinstance(outcome, Retry)
            assert outcome.reason in {"protocol error", "network error"}
            assert receiver.tickets[0].status == 0

    run(scenario)


def test_a_malformed_http_answer_is_a_protocol_error_retry() -> None:
    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SMTP/2.0 hello there\r\n\r\n")
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server = await asyncio.start_server(not_http, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = WebhookClient(f"http://127.0.0.1:{port}/", SECRET, timeout=2, max_response_bytes=1024)
        try:
            outcome = await post(client)
        finally:
            await client.aclose()
            server.close()
            await server.wait_closed()
        assert isinstance(outcome, Retry)
        assert outcome.reason == "protocol error"

    run(scenario)


def test_idempotency_key_is_stable_across_attempts_while_the_signature_is_fresh() -> None:
    statuses = iter([503, 500, 200])

    async def scenario() -> None:
        async with helpdesk(lambda ticket: Response(next(statuses))) as (receiver, client):
            outcomes = [await post(client, attempt=n, ticket_id="Q-42") for n in (1, 2, 3)]
            assert [type(o) for o in outcomes] == [Retry, Retry, Delivered]
            assert [t.idempotency_key for t in receiver.tickets] == ["Q-42"] * 3
            assert [t.attempt for t in receiver.tickets] == [1, 2, 3]
            assert all(t.signature_ok for t in receiver.tickets)

    run(scenario)


def test_sequential_posts_reuse_one_pooled_connection() -> None:
    async def scenario() -> None:
        async with helpdesk() as (receiver, client):
            outcomes = [await post(client, attempt=1, ticket_id=f"Q-{n}") for n in range(50)]
            assert all(isinstance(o, Delivered) for o in outcomes)
            assert len(receiver.accepted) == 50
            assert receiver.connections_accepted == 1

    run(scenario)


def test_concurrent_posts_stay_within_max_connections() -> None:
    async def scenario() -> None:
        async with helpdesk(answer(200, delay=0.05), max_connections=4) as (receiver, client):
            posts = [post(client, ticket_id=f"Q-{n}") for n in range(20)]
            outcomes = await asyncio.gather(*posts)
            assert all(isinstance(o, Delivered) for o in outcomes)
            assert 1 <= receiver.connections_accepted <= 4

    run(scenario)


def test_the_url_can_be_overridden_per_post() -> None:
    async def scenario() -> None:
        async with helpdesk() as (receiver, client):
            other = receiver.url.replace("/tickets", "/tenants/acme/tickets")
            outcome = await client.post(BODY, ticket_id="Q-1", tenant="acme", attempt=1, url=other)
            assert isinstance(outcome, Delivered)
            assert receiver.tickets[0].path == "/tenants/acme/tickets"

    run(scenario)


def test_failed_attempts_are_logged_with_the_queue_id(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        async with helpdesk(answer(503, b"maintenance")) as (_, client):
            await post(client, attempt=2, ticket_id="Q-77")

    with caplog.at_level(logging.INFO, logger="postroom.webhook"):
        run(scenario)
    (record,) = [r for r in caplog.records if r.name == "postroom.webhook"]
    assert record.__dict__["queue_id"] == "Q-77"
    assert record.__dict__["attempt"] == 2
    assert record.__dict__["status"] == 503
    assert record.__dict__["reason"] == "http 503"


def test_an_injected_transport_serves_every_attempt_with_the_same_classification_and_cap() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(503, headers={"Retry-After": "7"}, content=b"x" * 2000)

    async def scenario() -> None:
        mock = httpx.MockTransport(handler)
        client = WebhookClient(
            "http://helpdesk.test/tickets", SECRET, timeout=5, max_response_bytes=100, transport=mock
        )
        try:
            refused, unavailable = await post(client), await post(client, attempt=2)
        finally:
            await client.aclose()
        assert isinstance(refused, Retry)
        assert (refused.reason, refused.excerpt) == ("connect error", "refused")
        assert unavailable == Retry("http 503", 503, 7, "x" * 100, unavailable.ms)
        assert str(seen[1].url) == "http://helpdesk.test/tickets"
        assert seen[1].headers["idempotency-key"] == "Q-1"
        assert seen[1].headers["user-agent"].startswith("postroom/")
        assert verify(SECRET, seen[1].content, seen[1].headers[SIGNATURE_HEADER], now=time.time())

    run(scenario)
