"""KeepAliveTransport against real servers on 127.0.0.1 that answer with exact bytes.

Each server answers requests in order from a script, whichever connection they come on, and counts the TCP
connections it accepted: where reuse matters, that count is the assertion.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

import httpx
import pytest

from postroom.core.httpclient import MAX_HEAD_BYTES, KeepAliveTransport, body_request
from tests.outbound.submission_fixtures import TlsFiles

pytestmark = pytest.mark.timeout(30)

CAP = 1024
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@dataclass(frozen=True)
class Reply:
    """The bytes answering one request, then what the server does with the connection."""

    data: bytes = b""
    then: Literal["keep", "close", "half-close", "reset", "hang"] = "keep"
    unsolicited: bytes = b""  # sent a moment after `data`, before `then`: a server speaking out of turn


class WireServer:
    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed_by_client = asyncio.Event()
        self.port = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        half_closed = False
        try:
            while (request := await _read_request(reader)) is not None:
                self.requests.append(request)
                if half_closed:  # it can no longer answer
                    return
                reply = self.replies.pop(0)
                if not await self._answer(reply, reader, writer):
                    return
                half_closed = reply.then == "half-close"
            self.closed_by_client.set()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def _answer(self, reply: Reply, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Send `reply`; True when the connection stays open for another request."""
        writer.write(reply.data)
        await writer.drain()
        if reply.unsolicited:
            await asyncio.sleep(0.05)
            writer.write(reply.unsolicited)
            await writer.drain()
        if reply.then == "reset":
            # SO_LINGER 0: close() sends RST, not FIN.
            writer.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            writer.transport.abort()
        elif reply.then == "half-close":
            writer.write_eof()  # FIN, while still reading what the client sends
        elif reply.then == "hang":
            await reader.read()  # until the client gives up and closes
        return reply.then in ("keep", "half-close")


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head + await reader.readexactly(length)


@contextlib.asynccontextmanager
async def serving(replies: list[Reply], tls: ssl.SSLContext | None = None) -> AsyncIterator[WireServer]:
    wire = WireServer(replies)
    server = await asyncio.start_server(wire.serve, "127.0.0.1", 0, ssl=tls)
    wire.port = server.sockets[0].getsockname()[1]
    try:
        yield wire
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def transport(
    max_response_bytes: int = CAP, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[KeepAliveTransport]:
    keep_alive = KeepAliveTransport(max_response_bytes=max_response_bytes, ssl_context=ssl_context)
    try:
        yield keep_alive
    finally:
        await keep_alive.aclose()


async def send(
    client: KeepAliveTransport, url: str, body: bytes = b"hello", headers: dict[str, str] | None = None
) -> tuple[httpx.Response, bytes]:
    response = await client.handle_async_request(httpx.Request("POST", url, content=body, headers=headers))
    return response, await response.aread()


def url(server: WireServer, path: str = "/tickets", scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{server.port}{path}"


async def test_the_request_is_one_post_with_host_content_length_and_the_callers_headers() -> None:
    async with serving([Reply(OK)]) as server, transport() as client:
        headers = {"Idempotency-Key": "Q-1", "Content-Length": "999"}  # the transport counts the body itself
        await send(client, url(server, "/tickets?tenant=acme"), b'{"id": "Q-1"}', headers)
    (request,) = server.requests
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /tickets?tenant=acme HTTP/1.1"
    assert sorted(lines[1:]) == sorted(
        [f"Host: 127.0.0.1:{server.port}".encode(), b"Idempotency-Key: Q-1", b"Content-Length: 13"]
    )
    assert body == b'{"id": "Q-1"}'


async def test_a_header_carrying_a_line_break_is_refused_before_connecting() -> None:
    async with serving([Reply(OK)]) as server, transport() as client:
        with pytest.raises(httpx.LocalProtocolError):
            await send(client, url(server), headers={"X-Tenant": "acme\r\nX-Injected: yes"})
    assert server.connections == 0


async def test_a_content_length_answer_keeps_the_connection_for_the_next_request() -> None:
    answer = (
        b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nX-Folded: one\r\n  two\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    )
    async with serving([Reply(answer), Reply(OK)]) as server, transport() as client:
        response, body = await send(client, url(server))
        assert (response.status_code, response.reason_phrase, body) == (201, "Created", b"hello")
        assert response.http_version == "HTTP/1.1"
        assert response.headers["content-type"] == "text/plain"
        assert response.headers["x-folded"] == "one two"
        _, body = await send(client, url(server))
        assert body == b"ok"
    assert server.connections == 1


async def test_a_chunked_answer_with_extensions_and_trailers_is_joined_and_the_connection_kept() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\nX-Checksum: abc\r\nX-Other: d\r\n\r\n"
    )
    async with serving([Reply(chunked), Reply(OK)]) as server, transport() as client:
        _, body = await send(client, url(server))
        assert body == b"hello world!"
        _, body = await send(client, url(server))
        assert body == b"ok"
    assert server.connections == 1


async def test_an_answer_delimited_by_the_close_is_read_to_the_end_and_not_reused() -> None:
    close_delimited = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end"
    async with serving([Reply(close_delimited, then="close"), Reply(OK)]) as server, transport() as client:
        _, body = await send(client, url(server))
        assert body == b"until the end"
        _, body = await send(client, url(server))
        assert body == b"ok"
    assert server.connections == 2


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 100 Continue\r\n\r\n",
    ],
)
async def test_interim_1xx_answers_are_skipped(interim: bytes) -> None:
    async with serving([Reply(interim + OK), Reply(OK)]) as server, transport() as client:
        response, body = await send(client, url(server))
        assert (response.status_code, body) == (200, b"ok")
        _, body = await send(client, url(server))
        assert body == b"ok"
    assert server.connections == 1


async def test_a_204_has_no_body_even_without_framing_headers() -> None:
    no_content = b"HTTP/1.1 204 No Content\r\n\r\n"
    async with serving([Reply(no_content), Reply(OK)]) as server, transport() as client:
        response, body = await send(client, url(server))
        assert (response.status_code, body) == (204, b"")
        _, body = await send(client, url(server))
        assert body == b"ok"
    assert server.connections == 1


@pytest.mark.parametrize(
    ("answer", "connections"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 2),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok", 1),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", 2),
        (b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", 1),
    ],
)
async def test_the_connection_is_reused_only_when_the_answer_allows_it(
    answer: bytes, connections: int
) -> None:
    async with serving([Reply(answer), Reply(OK)]) as server, transport() as client:
        for _ in range(2):
            _, body = await send(client, url(server))
            assert body == b"ok"
            await asyncio.sleep(0.05)  # a server that closes has done so before the next request
    assert server.connections == connections


@pytest.mark.parametrize("close", ["close", "half-close"])
async def test_a_connection_the_server_closed_while_idle_is_replaced_not_written_to(
    close: Literal["close", "half-close"],
) -> None:
    async with serving([Reply(OK, then=close), Reply(OK)]) as server, transport() as client:
        await send(client, url(server))
        await asyncio.sleep(0.05)  # the server's FIN arrives while the connection is idle
        _, body = await send(client, url(server))
        assert body == b"ok"
    assert server.connections == 2
    assert len(server.requests) == 2  # a half-closed server would have seen a request on the old connection


async def test_a_connection_the_server_spoke_on_while_idle_is_not_read_as_the_next_answer() -> None:
    stray_408 = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    replies = [Reply(OK, unsolicited=stray_408, then="close"), Reply(OK)]
    async with serving(replies) as server, transport() as client:
        await send(client, url(server))
        await asyncio.sleep(0.2)
        response, _ = await send(client, url(server))
        assert response.status_code == 200
    assert server.connections == 2


@pytest.mark.parametrize("drop", ["close", "reset"])
async def test_a_reused_connection_dropped_before_any_answer_is_resent_once_on_a_new_one(
    drop: Literal["close", "reset"],
) -> None:
    # The keep-alive race: the server gives up on the idle connection just as our request reaches it.
    async with serving([Reply(OK), Reply(then=drop), Reply(OK)]) as server, transport() as client:
        await send(client, url(server))
        response, body = await send(client, url(server), b"second")
        assert (response.status_code, body) == (200, b"ok")
    assert server.connections == 2
    assert [r.rpartition(b"\r\n\r\n")[2] for r in server.requests] == [b"hello", b"second", b"second"]


async def test_a_new_connection_dropped_before_any_answer_is_an_error_not_a_resend() -> None:
    async with serving([Reply(then="close"), Reply(OK)]) as server, transport() as client:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await send(client, url(server))
    assert (server.connections, len(server.requests)) == (1, 1)


async def test_a_reused_connection_dropped_twice_is_resent_only_once() -> None:
    replies = [Reply(OK), Reply(then="close"), Reply(then="close"), Reply(OK)]
    async with serving(replies) as server, transport() as client:
        await send(client, url(server))
        with pytest.raises(httpx.RemoteProtocolError):
            await send(client, url(server))
    assert (server.connections, len(server.requests)) == (2, 3)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1100\r\n\r\n" + b"x" * 1100,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"x" * 1024 + b"\r\n"
        b"4c\r\n" + b"x" * 76 + b"\r\n0\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_a_body_beyond_the_cap_is_truncated_and_its_connection_not_reused(answer: bytes) -> None:
    async with serving([Reply(answer), Reply(OK)]) as server, transport(max_response_bytes=CAP) as client:
        _, body = await send(client, url(server))
        assert body == b"x" * CAP
        _, body = await send(client, url(server))
        assert body == b"ok"
    assert server.connections == 2


async def test_a_body_of_exactly_the_cap_is_complete_and_its_connection_reused() -> None:
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1024\r\n\r\n" + b"x" * CAP
    async with serving([Reply(answer), Reply(OK)]) as server, transport(max_response_bytes=CAP) as client:
        _, body = await send(client, url(server))
        assert body == b"x" * CAP
        await send(client, url(server))
    assert server.connections == 1


async def test_the_body_is_handed_over_raw_whatever_its_content_encoding() -> None:
    answer = b"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\nContent-Length: 9\r\n\r\nnot gzip!"
    async with serving([Reply(answer)]) as server, transport() as client:
        response = await client.handle_async_request(httpx.Request("POST", url(server), content=b""))
        assert b"".join([chunk async for chunk in response.aiter_raw()]) == b"not gzip!"


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP/2.0 hello there\r\n\r\n",
        b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2 200\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon in this line\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokay\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * MAX_HEAD_BYTES + b"\r\n\r\n",
    ],
    ids=[
        "not-http",
        "two-digit-status",
        "http2",
        "101",
        "header-without-colon",
        "space-in-name",
        "bad-length",
        "conflicting-lengths",
        "bad-chunk-size",
        "chunk-overrun",
        "head-over-64k",
    ],
)
async def test_a_malformed_answer_is_a_remote_protocol_error(answer: bytes) -> None:
    # The server keeps the connection open: the transport must see the fault, not wait for more.
    async with serving([Reply(answer, then="hang")]) as server, transport() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with asyncio.timeout(2):
                await send(client, url(server))


async def test_a_close_in_the_middle_of_the_body_is_a_remote_protocol_error() -> None:
    half = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b"
    async with serving([Reply(half, then="close")]) as server, transport() as client:
        with pytest.raises(httpx.RemoteProtocolError, match="middle of its response"):
            await send(client, url(server))


async def test_a_reset_in_the_middle_of_the_body_is_a_read_error() -> None:
    half = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b"
    async with serving([Reply(half, then="reset"), Reply(OK)]) as server, transport() as client:
        with pytest.raises(httpx.ReadError):
            await send(client, url(server))
        _, body = await send(client, url(server))
        assert body == b"ok"
    assert server.connections == 2


async def test_a_refused_connection_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    async with transport() as client:
        with pytest.raises(httpx.ConnectError):
            await send(client, f"http://127.0.0.1:{closed_port}/")


async def test_an_exchange_cancelled_midway_leaves_no_connection_to_reuse() -> None:
    slow = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345"
    async with serving([Reply(slow, then="hang"), Reply(OK)]) as server, transport() as client:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await send(client, url(server))
        response, body = await send(client, url(server))
        assert (response.status_code, body) == (200, b"ok")
    assert server.connections == 2


async def test_aclose_closes_the_kept_connection() -> None:
    async with serving([Reply(OK)]) as server:
        client = KeepAliveTransport(max_response_bytes=CAP)
        await send(client, url(server))
        assert not server.closed_by_client.is_set()
        await client.aclose()
        await asyncio.wait_for(server.closed_by_client.wait(), 5)


async def test_a_request_to_another_origin_opens_its_own_connection() -> None:
    other_ok = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nother"
    async with (
        serving([Reply(OK), Reply(OK)]) as first,
        serving([Reply(other_ok)]) as second,
        transport() as client,
    ):
        assert (await send(client, url(first)))[1] == b"ok"
        assert (await send(client, url(second)))[1] == b"other"
        assert (await send(client, url(first)))[1] == b"ok"
    assert (first.connections, second.connections) == (2, 1)


def _server_context(tls_files: TlsFiles) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files.cert, tls_files.key)
    return context


async def test_https_with_a_trusted_certificate_keeps_its_connection(tls_files: TlsFiles) -> None:
    async with (
        serving([Reply(OK), Reply(OK)], tls=_server_context(tls_files)) as server,
        transport(ssl_context=tls_files.client_context()) as client,
    ):
        for _ in range(2):
            response, body = await send(client, url(server, scheme="https"))
            assert (response.status_code, body) == (200, b"ok")
    assert server.connections == 1
    assert server.requests[0].startswith(b"POST /tickets HTTP/1.1\r\n")


async def test_https_with_an_untrusted_certificate_is_a_connect_error(tls_files: TlsFiles) -> None:
    async with (
        serving([Reply(OK)], tls=_server_context(tls_files)) as server,
        transport(ssl_context=ssl.create_default_context()) as client,
    ):
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await send(client, url(server, scheme="https"))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/tickets",
        "https://helpdesk.example/in?x=1",
        "http://[::1]:80/t",
        "http://h:443/",
    ],
)
def test_body_request_has_the_host_and_length_httpx_would_give(url: str) -> None:
    body = b'{"ticket": 1}'
    ours = body_request(httpx.URL(url), body, [(b"X-Postroom-Tenant", b"acme")])
    theirs = httpx.Request("POST", url, content=body, headers={"X-Postroom-Tenant": "acme"})
    assert sorted(ours.headers.multi_items()) == sorted(theirs.headers.multi_items())
    assert (ours.method, ours.url) == (theirs.method, theirs.url)
    assert ours.read() == body
