"""The MX listener: aiosmtpd hooks that route, run the filter stages and spool. No policy of its own.

Each hook gathers facts and asks `filters.chain` for a decision; reply texts come from
`postroom.core.replies`.
The 250 for DATA is sent only after `Spool.store` has fsynced the message into incoming/.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Protocol

from filters.base import Connection, Stage, Transaction
from filters.chain import FilterChain, verdict_summary
from inbound.config import ListenerSettings
from inbound.smtp.routing import Refusal, Route, Router
from postroom.core import replies as policy
from postroom.core.envelope import SpoolEnvelope, VerdictRecord, facts_from_filters
from postroom.core.smtp_limits import ERROR_LIMIT_REASON
from postroom.core.smtpserver import PostroomSMTP
from postroom.core.spool import Spool, SpoolError, SpoolFull, new_queue_id

log = logging.getLogger("postroom.smtp")


# A thread hop per MAIL for one statvfs() cost more than the check; `Spool.store` checks again before it
# writes, so an answer this old can only move a refusal from MAIL to the end of DATA.
ROOM_CHECK_INTERVAL = 1.0


@dataclass
class SessionState:
    conn: Connection
    txn: Transaction | None = None
    routes: list[Route] = field(default_factory=list)
    bounce_rcpts: list[str] = field(default_factory=list)
    counted: bool = False
    in_data: bool = False  # between DATA's end and our reply: never cut off by a shutdown


class BounceSink(Protocol):
    """Where VERP bounces addressed to the bounce domain go instead of becoming tickets (outbound relay)."""

    bounce_domain: str

    def is_bounce_address(self, rcpt: str) -> bool: ...

    async def process(self, rcpt: str, raw: bytes) -> Any: ...


class InboundHandler:
    def __init__(
        self,
        config: ListenerSettings,
        *,
        spool: Spool,
        router: Router,
        chain: FilterChain,
        on_queued: Callable[[Sequence[tuple[str, str]]], None] | None = None,
        bounces: BounceSink | None = None,
        metrics: Any | None = None,
        tenant_gate: Callable[[str], bool] | None = None,
        spool_io: Executor | None = None,
    ) -> None:
        self.config = config
        self.spool = spool
        self.router = router
        self.chain = chain
        self.on_queued = on_queued
        self.bounces = bounces
        self.metrics = metrics
        # Returns False when a tenant's deliveries are backed up (circuit open): its new mail waits (4xx).
        self.tenant_gate = tenant_gate
        # Spool writes get threads of their own so slow filter threads (SPF, DKIM) never delay a 250.
        self.spool_io = spool_io
        self.sessions = 0
        self.sessions_by_ip: dict[str, int] = {}
        self.accepting = True
        self._open: set[PostroomSMTP] = set()
        self._room = True
        self._room_checked_at = -ROOM_CHECK_INTERVAL

    # ---- connection -------------------------------------------------------------------------------------

    async def on_connect(self, server: PostroomSMTP) -> str | None:
        peer_ip, peer_port = _client_address(server)
        conn = Connection(session_id=secrets.token_hex(5), peer_ip=peer_ip, peer_port=peer_port)
        state = SessionState(conn)
        server.postroom_state = state
        self._open.add(server)
        smtp_cfg = self.config.smtp
        if not self.accepting:
            return self._refuse_connect(conn, policy.SHUTTING_DOWN.render(), "shutting_down")
        if self.sessions >= smtp_cfg.max_sessions:
            return self._refuse_connect(conn, policy.TOO_MANY_SESSIONS.render(), "max_sessions")
        if self.sessions_by_ip.get(peer_ip, 0) >= smtp_cfg.max_sessions_per_ip:
            return self._refuse_connect(conn, policy.TOO_MANY_FROM_IP.render(), "max_sessions_per_ip")
        self.sessions += 1
        self.sessions_by_ip[peer_ip] = self.sessions_by_ip.get(peer_ip, 0) + 1
        state.counted = True
        if self.metrics is not None:
            self.metrics.session_opened()
        log.info("connect", extra={"event": "connect", "session": conn.session_id, "client_ip": peer_ip})
        decision = await self.chain.run(Stage.CONNECT, conn, None)
        if decision is not None:
            await self._note_refusal(conn, Stage.CONNECT, decision.reason, decision.filter)
            return decision.render()
        return None

    def _refuse_connect(self, conn: Connection, reply: str, reason: str) -> str:
        log.warning(
            "connection refused",
            extra={
                "event": "refused",
                "session": conn.session_id,
                "client_ip": conn.peer_ip,
                "reason": reason,
            },
        )
        if self.metrics is not None:
            self.metrics.message_refused("connect", reason)
        return reply

    def on_close(self, server: PostroomSMTP) -> None:
        self._open.discard(server)
        state: SessionState | None = server.postroom_state
        if state is None:
            return
        if state.counted:
            self.sessions -= 1
            remaining = self.sessions_by_ip.get(state.conn.peer_ip, 1) - 1
            if remaining > 0:
                self.sessions_by_ip[state.conn.peer_ip] = remaining
            else:
                self.sessions_by_ip.pop(state.conn.peer_ip, None)
            if self.metrics is not None:
                self.metrics.session_closed()
        task = asyncio.ensure_future(self.chain.session_closed(state.conn))
        task.add_done_callback(_log_task_failure)
        log.info("disconnect", extra={"event": "disconnect", "session": state.conn.session_id})

    def on_error_limit(self, server: PostroomSMTP) -> None:
        """A session closed at the hard error limit: one more refusal toward the client's auto-block."""
        state: SessionState | None = server.postroom_state
        if state is not None:
            task = asyncio.ensure_future(
                self._note_refusal(state.conn, Stage.CONNECT, ERROR_LIMIT_REASON, "smtp")
            )
            task.add_done_callback(_log_task_failure)

    async def handle_PROXY(self, server: PostroomSMTP, session: Any, envelope: Any, proxy_data: Any) -> bool:
        """With `smtp.proxy_protocol`, HAProxy's PROXY header names the real client; a broken one closes."""
        return bool(proxy_data) and getattr(proxy_data, "src_addr", None) is not None

    # ---- HELO / EHLO ------------------------------------------------------------------------------------

    async def handle_HELO(self, server: PostroomSMTP, session: Any, envelope: Any, hostname: str) -> str:
        refusal = await self._helo_stage(server, hostname, esmtp=False)
        if refusal is not None:
            return refusal
        session.host_name = hostname
        return f"250 {self.config.smtp.hostname}"

    async def handle_EHLO(
        self, server: PostroomSMTP, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        refusal = await self._helo_stage(server, hostname, esmtp=True)
        if refusal is not None:
            session.host_name = None
            return [refusal]
        session.host_name = hostname
        # aiosmtpd handles pipelined commands line by line and always sends enhanced codes via PostroomSMTP.
        return [*responses[:-1], "250-PIPELINING", "250-ENHANCEDSTATUSCODES", responses[-1]]

    async def _helo_stage(self, server: PostroomSMTP, hostname: str, *, esmtp: bool) -> str | None:
        state = self._state(server)
        state.conn.helo = hostname
        state.conn.esmtp = esmtp
        state.conn.tls = server._tls_protocol is not None
        decision = await self.chain.run(Stage.HELO, state.conn, None)
        if decision is not None:
            await self._note_refusal(state.conn, Stage.HELO, decision.reason, decision.filter)
            return decision.render()
        return None

    # ---- MAIL / RCPT ------------------------------------------------------------------------------------

    async def handle_MAIL(
        self, server: PostroomSMTP, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        state = self._state(server)
        mail_from = "" if address == "<>" else address
        if mail_from and ("@" not in mail_from or mail_from.startswith("@")):
            return policy.BAD_SENDER.render(f"<{address}>")
        if not await self._spool_has_room():
            log.error("spool below free-space floor", extra={"event": "spool_full"})
            return policy.SPOOL_FULL.render()
        txn = Transaction(queue_id=new_queue_id(), mail_from=mail_from)
        txn.verdicts.extend(state.conn.verdicts)
        state.txn, state.routes, state.bounce_rcpts = txn, [], []
        decision = await self.chain.run(Stage.MAIL, state.conn, txn)
        if decision is not None:
            state.txn = None
            await self._note_refusal(state.conn, Stage.MAIL, decision.reason, decision.filter, txn)
            return decision.render()
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 sender ok"

    async def _spool_has_room(self) -> bool:
        """The free-space answer for MAIL, asked of the disk at most once per ROOM_CHECK_INTERVAL."""
        now = time.monotonic()
        if now - self._room_checked_at >= ROOM_CHECK_INTERVAL:
            self._room_checked_at = now  # before the await: MAILs meanwhile reuse the last answer
            self._room = await asyncio.get_running_loop().run_in_executor(
                self.spool_io, self.spool.has_room, self.config.smtp.max_message_size
            )
        return self._room

    async def handle_RCPT(
        self, server: PostroomSMTP, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        state = self._state(server)
        txn = state.txn
        if txn is None:
            return "503 5.5.1 need MAIL command"
        if len(envelope.rcpt_tos) >= self.config.smtp.max_recipients:
            return policy.TOO_MANY_RECIPIENTS.render()
        if self.bounces is not None and address.rpartition("@")[2].lower() == self.bounces.bounce_domain:
            # The bounce domain takes only return paths we made; a forged one must not become a ticket.
            if not self.bounces.is_bounce_address(address):
                await self._note_refusal(state.conn, Stage.RCPT, "routing", "routing", txn)
                return policy.UNKNOWN_TENANT.render(f"<{address}>: unknown return path")
            state.bounce_rcpts.append(address)
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 recipient ok"
        routed = self.router.route(address)
        if isinstance(routed, Refusal):
            await self._note_refusal(state.conn, Stage.RCPT, "routing", "routing", txn)
            log.info(
                "recipient refused",
                extra={
                    "event": "rcpt_refused",
                    "queue_id": txn.queue_id,
                    "rcpt": address,
                    "detail": routed.detail,
                },
            )
            return routed.reply.render(routed.detail)
        if self.tenant_gate is not None and not self.tenant_gate(routed.tenant):
            await self._note_refusal(state.conn, Stage.RCPT, "backpressure", "backpressure", txn)
            return policy.TENANT_BACKPRESSURE.render()
        txn.rcpt = routed.address
        decision = await self.chain.run(Stage.RCPT, state.conn, txn)
        txn.rcpt = ""
        if decision is not None:
            await self._note_refusal(state.conn, Stage.RCPT, decision.reason, decision.filter, txn)
            return decision.render()
        txn.rcpt_to.append(routed.address)
        state.routes.append(routed)
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 recipient ok"

    async def handle_RSET(self, server: PostroomSMTP, session: Any, envelope: Any) -> str:
        state = self._state(server)
        state.txn, state.routes, state.bounce_rcpts = None, [], []
        return "250 2.0.0 OK"

    # ---- DATA -------------------------------------------------------------------------------------------

    async def handle_DATA(self, server: PostroomSMTP, session: Any, envelope: Any) -> str:
        state = self._state(server)
        txn = state.txn
        if txn is None:
            return "503 5.5.1 need MAIL command"
        txn.message = envelope.original_content or b""
        state.txn = None  # whatever happens next, this transaction is over
        state.in_data = True
        try:
            return await self._finish_data(state, txn)
        finally:
            state.in_data = False

    async def _finish_data(self, state: SessionState, txn: Transaction) -> str:
        if state.routes:
            decision = await self.chain.run(Stage.DATA, state.conn, txn)
            if decision is not None:
                await self._note_refusal(state.conn, Stage.DATA, decision.reason, decision.filter, txn)
                return decision.render()
        for rcpt in state.bounce_rcpts:
            assert self.bounces is not None
            await self.bounces.process(rcpt, txn.message)
        if not state.routes:
            return f"250 2.0.0 bounce processed as {txn.queue_id}"
        items = self._spool_items(state, txn)
        try:
            ids = await asyncio.get_running_loop().run_in_executor(self.spool_io, self.spool.store, items)
        except SpoolFull:
            log.error("spool full, message refused", extra={"event": "spool_full", "queue_id": txn.queue_id})
            return policy.SPOOL_FULL.render()
        except SpoolError as exc:
            log.error(
                "spool write failed",
                extra={"event": "spool_error", "queue_id": txn.queue_id, "error": str(exc)},
            )
            return policy.SPOOL_ERROR.render()
        tenants = [item[0]["tenant"] for item in items]
        verdicts = verdict_summary(txn.verdicts)  # the session's connect and HELO verdicts included
        for queue_id, tenant in zip(ids, tenants, strict=True):
            log.info(
                "queued",
                extra={
                    "event": "queued",
                    "queue_id": queue_id,
                    "session": state.conn.session_id,
                    "tenant": tenant,
                    "size": len(txn.message),
                    "client_ip": state.conn.peer_ip,
                    "verdicts": verdicts,
                },
            )
            if self.metrics is not None:
                self.metrics.message_accepted(tenant)
        if self.on_queued is not None:
            self.on_queued(list(zip(ids, tenants, strict=True)))
        return f"{policy.QUEUED.render()} {' '.join(ids)}"

    def _spool_items(self, state: SessionState, txn: Transaction) -> list[tuple[dict[str, Any], bytes]]:
        """One spool entry (one ticket) per tenant; the first keeps the transaction's queue id."""
        by_tenant: dict[str, list[Route]] = {}
        for route in state.routes:
            by_tenant.setdefault(route.tenant, []).append(route)
        now = time.time()
        received_at = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        conn = state.conn
        facts = facts_from_filters(txn.facts)
        items = []
        for index, (tenant, routes) in enumerate(by_tenant.items()):
            queue_id = txn.queue_id if index == 0 else new_queue_id()
            envelope = SpoolEnvelope(
                id=queue_id,
                tenant=tenant,
                mailbox=routes[0].mailbox,
                mailbox_hash=routes[0].mailbox_hash,
                received_at=received_at,
                mail_from=txn.mail_from,
                rcpt_to=tuple(r.address for r in routes),
                client_ip=conn.peer_ip,
                helo=conn.helo,
                tls=conn.tls,
                session=conn.session_id,
                transaction=txn.queue_id,
                verdicts=tuple(VerdictRecord(**v.as_dict()) for v in txn.verdicts),
            ).with_facts(facts)
            raw = self._trace_headers(conn, txn, queue_id, routes, now) + txn.message
            items.append((envelope.to_meta(), raw))
        return items

    def _trace_headers(
        self, conn: Connection, txn: Transaction, queue_id: str, routes: list[Route], now: float
    ) -> bytes:
        protocol = ("ESMTPS" if conn.tls else "ESMTP") if conn.esmtp else "SMTP"
        reverse = f"{_header_safe(conn.reverse_name)} " if conn.reverse_name else ""
        rcpt = f"\r\n\tfor <{routes[0].address}>" if len(routes) == 1 else ""
        received = (
            f"Received: from {_header_safe(conn.helo) or 'unknown'} ({reverse}[{conn.peer_ip}])\r\n"
            f"\tby {self.config.smtp.hostname} (Postroom) with {protocol} id {queue_id}{rcpt};\r\n"
            f"\t{format_datetime(datetime.fromtimestamp(now, UTC))}\r\n"
        )
        lines = [f"{name}: {_header_safe(value)}\r\n" for name, value in txn.add_headers]
        return ("".join(lines) + received).encode("utf-8", "replace")

    # ---- shutdown -------------------------------------------------------------------------------------

    def close_idle_sessions(self) -> int:
        """On shutdown: say 421 to sessions between transactions; those mid-transaction may finish."""
        closed = 0
        for server in list(self._open):
            state: SessionState | None = server.postroom_state
            transport = server.transport
            if state is None or state.txn is not None or state.in_data:
                continue
            if transport is not None and not transport.is_closing():
                server.close_with(policy.SHUTTING_DOWN.render())
                closed += 1
        return closed

    # ---- helpers ----------------------------------------------------------------------------------------

    def _state(self, server: PostroomSMTP) -> SessionState:
        state: SessionState | None = server.postroom_state
        if state is None:  # only if a hook runs before the greeting, which aiosmtpd does not do
            raise RuntimeError("SMTP session has no state")
        return state

    async def _note_refusal(
        self, conn: Connection, stage: Stage, reason: str, filter_name: str, txn: Transaction | None = None
    ) -> None:
        log.info(
            "refused",
            extra={
                "event": "refused",
                "session": conn.session_id,
                "queue_id": txn.queue_id if txn else "",
                "client_ip": conn.peer_ip,
                "stage": stage.value,
                "filter": filter_name,
                "reason": reason,
            },
        )
        if self.metrics is not None:
            self.metrics.message_refused(stage.value, reason, filter_name)
        await self.chain.record_refusal(conn, reason)

    async def handle_exception(self, error: Exception) -> str:
        log.exception("unexpected error in SMTP session", exc_info=error, extra={"event": "session_error"})
        return policy.SPOOL_ERROR.render()


def _client_address(server: PostroomSMTP) -> tuple[str, int]:
    proxy = getattr(server.session, "proxy_data", None)
    if proxy is not None and getattr(proxy, "src_addr", None):
        return str(proxy.src_addr), int(proxy.src_port or 0)
    peer: Any = getattr(server.session, "peer", None)
    if isinstance(peer, tuple) and len(peer) >= 2:
        return str(peer[0]), int(peer[1])
    return "unknown", 0


def _header_safe(value: str) -> str:
    """Header values from clients may not contain line breaks (header injection)."""
    return "".join(ch if ch.isprintable() else " " for ch in value)[:500]


def _log_task_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("session cleanup failed", exc_info=task.exception())
