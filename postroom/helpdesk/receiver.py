"""A small real helpdesk: an HTTP/1.1 server that verifies Postroom's signature and records tickets.

Three users: the test suite (as "the helpdesk", with scripted faults), `postroom demo` and
`python -m postroom.helpdesk.receiver` (one line per ticket), and the benchmark. It is plain asyncio — no web
framework
— so it runs inside a test's event loop, in a background thread (`run_in_thread`) or as its own process, and
keeps up with a few thousand keep-alive requests a second on loopback.

It is deliberately minimal: requests must carry Content-Length (chunked uploads get 501), one request at a
time per connection, no TLS. Postroom's client needs nothing more.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from postroom.core.signing import SIGNATURE_HEADER, verify
from postroom.helpdesk.httpwire import MAX_HEAD_BYTES, BadRequest, Request, read_request, render_response

log = logging.getLogger("postroom.receiver")

TICKETS_PATH = "/tickets"
DEFAULT_MAX_BODY_BYTES = 64 * 1024 * 1024
# WebhookConfig's default secret, so `postroom demo` and this receiver agree with no config at all.
DEFAULT_SECRET = "change-me"


@dataclass(frozen=True)
class Response:
    """What the receiver answers; tests script faults with it."""

    status: int = 200
    body: bytes = b'{"ok":true}'
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering: a slow or hanging helpdesk
    trickle: float = 0.0  # seconds between body chunks: a server dribbling its answer
    chunk_size: int = 64 * 1024
    disconnect: bool = False  # reset the connection instead of answering


@dataclass
class ReceivedTicket:
    """One POST as the receiver saw it, and what it answered."""

    payload: dict[str, Any] | None
    headers: Mapping[str, str]  # names lower-cased
    body: bytes
    path: str
    signature_ok: bool
    received_at: float
    status: int = 0  # the status answered; 0 when the connection was dropped instead
    bytes_sent: int = 0  # response bytes the client took before hanging up (or all of them)

    @property
    def idempotency_key(self) -> str | None:
        return self.headers.get("idempotency-key")

    @property
    def attempt(self) -> int | None:
        value = self.headers.get("x-postroom-attempt", "")
        return int(value) if value.isascii() and value.isdigit() else None

    @property
    def tenant(self) -> str | None:
        return self.headers.get("x-postroom-tenant")


Responder = Callable[[ReceivedTicket], Response]
TicketCallback = Callable[[dict[str, Any], Mapping[str, str]], None]


class TicketReceiver:
    """The helpdesk stand-in.

    `tickets` records every POST with the status answered; `accepted` holds the 2xx ones. `respond_with`
    scripts the answer per ticket (faults, for tests); `on_ticket` is called for each accepted ticket.
    `keep_tickets=False` stops recording (counts and callbacks continue), so a long-running receiver stays
    small. Valid signatures are checked against `clock`, the server's own time.
    """

    def __init__(
        self,
        secret: str,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_ticket: TicketCallback | None = None,
        respond_with: Responder | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        keep_tickets: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.secret = secret
        self.host = host
        self.port = port
        self.on_ticket = on_ticket
        self.respond_with = respond_with
        self.max_body_bytes = max_body_bytes
        self.keep_tickets = keep_tickets
        self.clock = clock
        self.tickets: list[ReceivedTicket] = []
        self.connections_accepted = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self._accepted = 0
        self._accepted_changed = threading.Condition()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{TICKETS_PATH}"

    @property
    def accepted(self) -> list[ReceivedTicket]:
        """Tickets answered with a 2xx: what the helpdesk took."""
        return [t for t in self.tickets if 200 <= t.status < 300]

    async def start(self) -> None:
        """Listen; after a stop(), listen again on the same port (a helpdesk coming back up)."""
        self.loop = asyncio.get_running_loop()
        self._server = await asyncio.start_server(
            self._serve_connection, self.host, self.port, limit=MAX_HEAD_BYTES
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        """Stop listening and drop open connections: clients now see refused connections."""
        if self._server is None:
            return
        self._server.close()
        for task, writer in list(self._connections.items()):
            writer.transport.abort()
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block (from another thread) until `count` tickets were accepted; False on timeout."""
        with self._accepted_changed:
            return self._accepted_changed.wait_for(lambda: self._accepted >= count, timeout)

    async def wait_for_async(self, count: int, timeout: float) -> bool:
        """Like wait_for, for a coroutine, whichever loop the receiver runs on."""
        deadline = time.monotonic() + timeout
        while self._accepted < count:
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.01)
        return True

    @contextlib.contextmanager
    def run_in_thread(self, timeout: float = 10.0) -> Iterator[TicketReceiver]:
        """Serve from a background thread with its own loop, e.g. while Postroom runs in a subprocess."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="ticket-receiver", daemon=True)
        thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self.start(), loop).result(timeout)
            yield self
        finally:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.stop(), loop).result(timeout)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            loop.close()

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._connections[task] = writer
        try:
            while await self._serve_one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away; nothing to answer
        except asyncio.CancelledError:
            # Only stop() cancels a connection. Ending normally keeps Python 3.11's stream callback from
            # logging the cancellation as an error (it calls task.exception() on the finished task).
            pass
        finally:
            self._connections.pop(task, None)
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; True when the connection stays open for another."""
        try:
            request = await read_request(reader, max_body_bytes=self.max_body_bytes)
        except BadRequest as exc:
            writer.write(render_response(exc.status, exc.message.encode(), {}, keep_alive=False))
            await writer.drain()
            return False
        if request is None:
            return False
        if request.method != "POST":
            body = b'{"error":"only POST is accepted"}'
            writer.write(render_response(405, body, {"Allow": "POST"}, keep_alive=request.keep_alive))
            await writer.drain()
            return request.keep_alive
        ticket, response = self._record(request)
        if response.delay:
            await asyncio.sleep(response.delay)
        if response.disconnect:
            writer.transport.abort()
            return False
        await self._send(writer, ticket, response, keep_alive=request.keep_alive)
        return request.keep_alive

    def _record(self, request: Request) -> tuple[ReceivedTicket, Response]:
        """Verify and store the request; decide the answer."""
        signature = request.headers.get(SIGNATURE_HEADER.lower(), "")
        signature_ok = verify(self.secret, request.body, signature, now=self.clock())
        payload = _json_object(request.body) if signature_ok else None
        ticket = ReceivedTicket(
            payload, request.headers, request.body, request.path, signature_ok, time.time()
        )
        if self.keep_tickets:
            self.tickets.append(ticket)
        if not signature_ok:
            log.warning("rejected request with an invalid signature", extra=_log_extra(ticket))
            response = Response(401, b'{"error":"invalid signature"}')
        elif payload is None:
            log.warning("rejected request whose body is not a JSON object", extra=_log_extra(ticket))
            response = Response(400, b'{"error":"body must be a JSON object"}')
        else:
            response = self._scripted(ticket)
        ticket.status = 0 if response.disconnect else response.status
        if 200 <= ticket.status < 300:
            self._count_accepted(ticket, payload)
        return ticket, response

    def _scripted(self, ticket: ReceivedTicket) -> Response:
        if self.respond_with is None:
            return Response()
        try:
            return self.respond_with(ticket)
        except Exception:
            log.exception("respond_with raised; answering 500", extra=_log_extra(ticket))
            return Response(500, b'{"error":"receiver script failed"}')

    def _count_accepted(self, ticket: ReceivedTicket, payload: dict[str, Any] | None) -> None:
        with self._accepted_changed:
            self._accepted += 1
            self._accepted_changed.notify_all()
        if self.on_ticket is not None and payload is not None:
            try:
                self.on_ticket(payload, ticket.headers)
            except Exception:
                log.exception("on_ticket callback failed", extra=_log_extra(ticket))

    async def _send(
        self, writer: asyncio.StreamWriter, ticket: ReceivedTicket, response: Response, *, keep_alive: bool
    ) -> None:
        data = render_response(response.status, response.body, response.headers, keep_alive=keep_alive)
        if not response.trickle:
            writer.write(data)
            await writer.drain()
            ticket.bytes_sent = len(data)
            return
        step = max(1, response.chunk_size)
        for offset in range(0, len(data), step):
            writer.write(data[offset : offset + step])
            await writer.drain()  # raises once the client has hung up
            ticket.bytes_sent = min(len(data), offset + step)
            await asyncio.sleep(response.trickle)


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _log_extra(ticket: ReceivedTicket) -> dict[str, object]:
    return {"queue_id": ticket.idempotency_key, "tenant": ticket.tenant, "attempt": ticket.attempt}


def describe(payload: Mapping[str, Any]) -> str:
    """One printable line for a ticket: where it went, who wrote, what about."""
    mailbox = f"{payload.get('tenant')}/{payload.get('mailbox')}"
    if payload.get("mailbox_hash"):
        mailbox += f"+{payload['mailbox_hash']}"
    sender = payload.get("from")
    name, email = (sender.get("name"), sender.get("email")) if isinstance(sender, dict) else (None, None)
    author = f"{name} <{email}>" if name else f"<{email}>" if email else "(unknown sender)"
    line = f"ticket {mailbox} from {author}: {payload.get('subject') or '(no subject)'}"
    return "".join(ch if ch.isprintable() else " " for ch in line)


async def _serve_forever(receiver: TicketReceiver) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stopping.set)
    await receiver.start()
    print(f"receiver listening on {receiver.url}", file=sys.stderr, flush=True)
    await stopping.wait()
    await receiver.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m postroom.helpdesk.receiver",
        description="A demo helpdesk: verifies Postroom's webhook signature and prints one line per ticket.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025, help="0 picks a free port (default: 8025)")
    parser.add_argument("--secret", default=DEFAULT_SECRET, help="the [webhook] secret Postroom signs with")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s", stream=sys.stderr)

    def print_ticket(payload: dict[str, Any], headers: Mapping[str, str]) -> None:
        print(describe(payload), flush=True)

    receiver = TicketReceiver(
        args.secret, host=args.host, port=args.port, on_ticket=print_ticket, keep_tickets=False
    )
    try:
        asyncio.run(_serve_forever(receiver))
    except OSError as exc:
        print(f"receiver: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
