"""The test helpdesk: a real HTTP/1.1 server that verifies signatures, records tickets and scripts faults."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from inbound.config import WebhookConfig
from postroom.core.signing import SIGNATURE_HEADER, sign
from postroom.helpdesk.receiver import DEFAULT_SECRET, Response, TicketReceiver, describe

SECRET = "receiver-test-secret"
TICKET = {
    "schema": "postroom.ticket/1",
    "id": "Q-9",
    "tenant": "acme",
    "mailbox": "support",
    "mailbox_hash": "4711",
    "subject": "Printer on fire",
    "from": {"name": "Ada Lovelace", "email": "ada@example.org"},
}
BODY = orjson.dumps(TICKET)
REPO = Path(__file__).resolve().parents[3]


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=30))


def signed_headers(body: bytes = BODY, secret: str = SECRET, ticket_id: str = "Q-9") -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body, int(time.time())),
        "Idempotency-Key": ticket_id,
        "X-Postroom-Attempt": "2",
        "X-Postroom-Tenant": "acme",
    }


def raw_post(body: bytes = BODY, *, extra: str = "", version: str = "HTTP/1.1") -> bytes:
    headers = "".join(f"{name}: {value}\r\n" for name, value in signed_headers(body).items())
    head = f"POST /tickets {version}\r\nHost: x\r\n{headers}Content-Length: {len(body)}\r\n{extra}\r\n"
    return head.encode() + body


async def exchange(receiver: TicketReceiver, data: bytes) -> tuple[bytes, bool]:
    """Send raw bytes on a fresh connection; return what came back before the server closed, and whether
    it closed (False: the connection was still open after the first answer)."""
    reader, writer = await asyncio.open_connection(receiver.host, receiver.port)
    try:
        writer.write(data)
        await writer.drain()
        received = b""
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), timeout=0.5)
            except TimeoutError:
                return received, False
            if not chunk:
                return received, True
            received += chunk
    finally:
        writer.close()


async def started(receiver: TicketReceiver) -> TicketReceiver:
    await receiver.start()
    return receiver


def test_a_signed_ticket_is_accepted_recorded_and_reported() -> None:
    seen: list[tuple[dict[str, Any], Mapping[str, str]]] = []

    async def scenario() -> None:
        receiver = await started(TicketReceiver(SECRET, on_ticket=lambda p, h: seen.append((p, h))))
        try:
            async with httpx.AsyncClient() as client:
                response = await client.post(receiver.url, content=BODY, headers=signed_headers())
        finally:
            await receiver.stop()
        assert response.status_code == 200
        (ticket,) = receiver.accepted
        assert (ticket.signature_ok, ticket.payload, ticket.status, ticket.path) == (
            True,
            TICKET,
            200,
            "/tickets",
        )
        assert (ticket.idempotency_key, ticket.attempt, ticket.tenant) == ("Q-9", 2, "acme")
        assert receiver.url == f"http://127.0.0.1:{receiver.port}/tickets"
        assert [payload for payload, _ in seen] == [TICKET]
        assert seen[0][1]["idempotency-key"] == "Q-9"

    run(scenario)


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        (signed_headers(secret="someone-else"), BODY),
        (signed_headers(), BODY + b" "),
        ({"Content-Type": "application/json"}, BODY),
    ],
    ids=["wrong secret", "altered body", "unsigned"],
)
def test_a_bad_signature_is_answered_401_and_recorded_as_such(headers: dict[str, str], body: bytes) -> None:
    seen: list[object] = []

    async def scenario() -> None:
        receiver = await started(TicketReceiver(SECRET, on_ticket=lambda p, h: seen.append(p)))
        try:
            async with httpx.AsyncClient() as client:
                response = await client.post(receiver.url, content=body, headers=headers)
        finally:
            await receiver.stop()
        assert response.status_code == 401
        (ticket,) = receiver.tickets
        assert (ticket.signature_ok, ticket.status, ticket.payload) == (False, 401, None)
        assert receiver.accepted == [] and seen == []

    run(scenario)


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]"], ids=["not JSON", "not an object"])
def test_a_signed_body_that_is_not_a_json_object_is_answered_400(body: bytes) -> None:
    async def scenario() -> None:
        receiver = await started(TicketReceiver(SECRET))
        try:
            async with httpx.AsyncClient() as client:
                response = await client.post(receiver.url, content=body, headers=signed_headers(body))
        finally:
            await receiver.stop()
        assert response.status_code == 400
        assert [(t.signature_ok, t.status) for t in receiver.tickets] == [(True, 400)]

    run(scenario)


def test_scripted_answers_and_a_failing_script() -> None:
    def script(ticket: Any) -> Response:
        if ticket.idempotency_key == "boom":
            raise RuntimeError("script bug")
        return Response(503, b"later", {"Retry-After": "7"})

    async def scenario() -> None:
        receiver = await started(TicketReceiver(SECRET, respond_with=script))
        try:
            async with httpx.AsyncClient() as client:
                later = await client.post(receiver.url, content=BODY, headers=signed_headers())
                boom = await client.post(receiver.url, content=BODY, headers=signed_headers(ticket_id="boom"))
        finally:
            await receiver.stop()
        assert (later.status_code, later.text, later.headers["retry-after"]) == (503, "later", "7")
        assert boom.status_code == 500
        assert [t.status for t in receiver.tickets] == [503, 500]

    run(scenario)


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async def scenario() -> None:
        receiver = await started(TicketReceiver(SECRET))
        try:
            answer, closed = await exchange(receiver, raw_post() + raw_post() + raw_post())
        finally:
            await receiver.stop()
        assert answer.count(b"HTTP/1.1 200 OK\r\n") == 3
        assert not closed
        assert receiver.connections_accepted == 1
        assert len(receiver.accepted) == 3

    run(scenario)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (raw_post(extra="Connection: close\r\n"), b"200"),
        (raw_post(version="HTTP/1.0"), b"200"),
        (b"GET /tickets HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"405"),
        (b"POST /tickets HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"501"),
        (b"POST /tickets HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", b"413"),
        (b"POST /tickets HTTP/1.1\r\nContent-Length: -1\r\n\r\n", b"400"),
        (b"HELLO\r\n\r\n", b"400"),
        (b"POST /tickets HTTP/1.1\r\nno colon here\r\n\r\n", b"400"),
        (b"POST /tickets HTTP/1.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", b"431"),
    ],
    ids=[
        "connection close",
        "http/1.0",
        "GET",
        "chunked",
        "too big",
        "bad length",
        "garbage",
        "bad header",
        "huge head",
    ],
)
def test_the_server_answers_then_closes_when_it_should(data: bytes, status: bytes) -> None:
    async def scenario() -> None:
        receiver = await started(TicketReceiver(SECRET))
        try:
            answer, closed = await exchange(receiver, data)
        finally:
            await receiver.stop()
        assert answer.startswith(b"HTTP/1.1 " + status)
        assert closed

    run(scenario)


def test_stop_refuses_connections_and_start_listens_again_on_the_same_port() -> None:
    async def scenario() -> None:
        receiver = await started(TicketReceiver(SECRET))
        port = receiver.port
        await receiver.stop()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
        await receiver.start()
        try:
            assert receiver.port == port
            answer, _ = await exchange(receiver, raw_post())
            assert answer.startswith(b"HTTP/1.1 200")
        finally:
            await receiver.stop()

    run(scenario)


def test_run_in_thread_serves_a_synchronous_caller() -> None:
    receiver = TicketReceiver(SECRET)
    with receiver.run_in_thread(), httpx.Client() as client:
        for n in range(3):
            response = client.post(receiver.url, content=BODY, headers=signed_headers(ticket_id=f"Q-{n}"))
            assert response.status_code == 200
        assert receiver.wait_for(3, timeout=5)
        assert not receiver.wait_for(4, timeout=0.05)
    assert [t.idempotency_key for t in receiver.accepted] == ["Q-0", "Q-1", "Q-2"]
    with pytest.raises(httpx.ConnectError):
        httpx.post(receiver.url, content=BODY, headers=signed_headers())


def test_wait_for_async_sees_tickets_from_another_task() -> None:
    async def scenario() -> None:
        receiver = await started(TicketReceiver(SECRET))
        try:
            async with httpx.AsyncClient() as client:
                sending = asyncio.create_task(
                    client.post(receiver.url, content=BODY, headers=signed_headers())
                )
                assert await receiver.wait_for_async(1, timeout=5)
                await sending
            assert not await receiver.wait_for_async(2, timeout=0.05)
        finally:
            await receiver.stop()

    run(scenario)


def test_describe_prints_one_line_per_ticket() -> None:
    assert describe(TICKET) == "ticket acme/support+4711 from Ada Lovelace <ada@example.org>: Printer on fire"
    bare = {"tenant": "acme", "mailbox": "sales", "from": {"name": "", "email": "x@y"}, "subject": "a\nb"}
    assert describe(bare) == "ticket acme/sales from <x@y>: a b"
    assert describe({"tenant": "t", "mailbox": "m"}) == "ticket t/m from (unknown sender): (no subject)"


def test_keep_tickets_off_still_counts_and_calls_back() -> None:
    seen: list[dict[str, Any]] = []

    async def scenario() -> None:
        receiver = await started(
            TicketReceiver(SECRET, keep_tickets=False, on_ticket=lambda p, h: seen.append(p))
        )
        try:
            answer, _ = await exchange(receiver, raw_post() + raw_post())
            assert await receiver.wait_for_async(2, timeout=5)
        finally:
            await receiver.stop()
        assert answer.count(b"HTTP/1.1 200 OK") == 2
        assert receiver.tickets == [] and seen == [TICKET, TICKET]

    run(scenario)


def test_default_secret_matches_postroom_default_config() -> None:
    assert WebhookConfig().secret == DEFAULT_SECRET


def test_command_line_receiver_prints_each_ticket() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "postroom.helpdesk.receiver", "--port", "0", "--secret", SECRET]
    with subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stderr is not None and process.stdout is not None
            banner = process.stderr.readline()
            assert banner.startswith("receiver listening on http://127.0.0.1:")
            url = banner.split()[-1]
            response = httpx.post(url, content=BODY, headers=signed_headers(), timeout=5)
            assert response.status_code == 200
            assert process.stdout.readline().rstrip("\n") == describe(TICKET)
        finally:
            process.send_signal(signal.SIGTERM)
            returncode = process.wait(timeout=10)
    assert returncode == 0
