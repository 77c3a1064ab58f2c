"""The submission listener (RFC 6409): the helpdesk hands its notifications to Postroom here.

A session must come from an allowed network, switch to TLS (STARTTLS), authenticate (AUTH PLAIN or LOGIN,
offered only over TLS), and may then send only as its user's sender domains. Recipients on the suppression
list are refused at RCPT. On DATA the message is completed (Message-ID, Date, Auto-Submitted), DKIM-signed
and stored in the outbound spool as one entry per recipient domain — and only then answered with 250.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
import time
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiosmtpd.smtp import MISSING, AuthResult, Envelope, LoginPassword, Session

from outbound.auth_limiter import AuthLimiter
from outbound.authenticator import Authenticator, AuthOutcome
from outbound.dkim import DkimKeyError, DkimSigner
from outbound.message_headers import address_domain, complete_message, from_addresses, parse_headers
from outbound.submission_protocol import SubmissionSMTP, peer_ip
from outbound.suppression import SuppressionError, SuppressionList, normalize_address
from postroom.core import replies as policy
from postroom.core.addresses import split_mailbox
from postroom.core.configload import parse_hostport
from postroom.core.spool import Spool, SpoolError, SpoolFull

if TYPE_CHECKING:
    from outbound.config import RelaySettings

log = logging.getLogger("postroom.outbound.submission")

# RFC 5321 §4.5.3.2.7: a server should wait at least 5 minutes for the next command.
COMMAND_TIMEOUT = 300.0
# On stop, messages already being stored get this long to finish (so their client gets its 250).
STOP_GRACE = 10.0


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


class SubmissionHandler:
    """aiosmtpd hooks: the decisions of one submission listener."""

    def __init__(
        self,
        cfg: RelaySettings,
        *,
        spool: Spool,
        suppression: SuppressionList,
        signer: DkimSigner,
        authenticator: Authenticator,
        clock: Callable[[], float],
    ) -> None:
        sub = cfg.submission
        self.hostname = sub.hostname or cfg.smtp.hostname
        self.networks = [ipaddress.ip_network(n) for n in sub.allowed_networks]
        self.users = {user.name: user for user in sub.users}
        self.max_recipients = sub.max_recipients
        self.add_auto_submitted = sub.add_auto_submitted
        self.spool = spool
        self.suppression = suppression
        self.signer = signer
        self.authenticator = authenticator
        self.clock = clock
        self.on_queued: Callable[[list[str]], None] | None = None
        self.storing: set[asyncio.Task[str]] = set()

    # ---- connection and AUTH ------------------------------------------------------------------------------

    def connection_refusal(self, session: Session) -> str | None:
        """The reply refusing a client outside the allowed networks; None lets it in."""
        ip = peer_ip(session)
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            address = None
        if address is not None and any(address in network for network in self.networks):
            return None
        log.warning("submission client refused: network not allowed", extra={"client_ip": ip})
        return policy.CLIENT_NOT_ALLOWED.render()

    async def handle_AUTH(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope, args: Any
    ) -> Any:
        # A locked-out client is refused before it sends credentials (nothing to guess against).
        if self.authenticator.lockout_remaining(peer_ip(session)) > 0:
            return policy.AUTH_LOCKED_OUT.render()
        return MISSING

    async def verify(self, server: SubmissionSMTP, result: AuthResult) -> AuthResult:
        """Finish an AUTH exchange whose credentials aiosmtpd has decoded."""
        credentials = result.auth_data
        if result.success or not isinstance(credentials, LoginPassword):
            return result  # aborted or malformed exchange: aiosmtpd has already answered
        assert server.session is not None
        outcome, name = await self.authenticator.authenticate(
            peer_ip(server.session), credentials.login, credentials.password
        )
        if outcome is AuthOutcome.OK:
            return AuthResult(success=True, auth_data=name)
        reply = policy.AUTH_LOCKED_OUT if outcome is AuthOutcome.LOCKED else policy.AUTH_INVALID
        return AuthResult(success=False, handled=False, message=reply.render())

    # ---- envelope -----------------------------------------------------------------------------------------

    async def handle_MAIL(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        user = self.users[str(session.auth_data)]
        # Strict: the domain checked is the one a remote MX reads; no quoted local part to dress it up.
        sender = split_mailbox(address, allow_quoted=False)
        if sender is None or sender.domain not in user.sender_domains:
            log.warning(
                "MAIL FROM refused: not a sender domain of the user",
                extra={"user": user.name, "mail_from": address, "client_ip": peer_ip(session)},
            )
            return policy.SENDER_NOT_ALLOWED.render(address)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SubmissionSMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= self.max_recipients:
            return policy.TOO_MANY_RECIPIENTS.render()
        try:
            normalize_address(address)
        except ValueError:
            return policy.BAD_ADDRESS.render()
        if split_mailbox(address) is None:  # no address literals, source routes or single-label domains
            return policy.BAD_ADDRESS.render()
        try:
            entry = await self.suppression.lookup(address)
        except SuppressionError as exc:
            log.error(
                "suppression list unavailable", extra={"error": str(exc), "client_ip": peer_ip(session)}
            )
            return policy.reply_for("suppression.unavailable", temporary=True).render()
        if entry is not None:
            log.info(
                "RCPT refused: suppressed",
                extra={"rcpt": address, "reason": entry.reason, "client_ip": peer_ip(session)},
            )
            return policy.reply_for("suppression.suppressed", temporary=False).render()
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 2.1.5 OK"

    # ---- message ------------------------------------------------------------------------------------------

    async def handle_DATA(self, server: SubmissionSMTP, session: Session, envelope: Envelope) -> str:
        user = self.users[str(session.auth_data)]
        raw = envelope.original_content or b""
        senders = from_addresses(parse_headers(raw))
        domains = [address_domain(a) for a in senders]
        if not senders or not all(domains):
            return policy.MISSING_FROM.render()
        foreign = [a for a, d in zip(senders, domains, strict=True) if d not in user.sender_domains]
        if foreign:
            log.warning(
                "DATA refused: From: not a sender domain of the user",
                extra={"user": user.name, "from": foreign[0], "client_ip": peer_ip(session)},
            )
            return policy.SENDER_NOT_ALLOWED.render(f"From: {foreign[0]}")
        # Shielded: once storing has begun it completes even if the client vanishes (it will retry: a
        # harmless duplicate, never a loss), and stop() waits for it.
        task = asyncio.ensure_future(
            self._sign_and_store(
                raw,
                mail_from=str(envelope.mail_from),
                rcpt_to=list(envelope.rcpt_tos),
                user=user.name,
                from_domain=domains[0],
                client_ip=peer_ip(session),
            )
        )
        self.storing.add(task)
        task.add_done_callback(self.storing.discard)
        return await asyncio.shield(task)

    async def _sign_and_store(
        self, raw: bytes, *, mail_from: str, rcpt_to: list[str], user: str, from_domain: str, client_ip: str
    ) -> str:
        completed = complete_message(
            raw, hostname=self.hostname, now=self.clock(), add_auto_submitted=self.add_auto_submitted
        )
        try:
            signed = await self.signer.sign(completed.raw, from_domain)
        except DkimKeyError as exc:
            log.error("DKIM signing failed", extra={"error": str(exc), "user": user})
            return policy.SPOOL_ERROR.render()
        base: dict[str, Any] = {
            "kind": "outbound",
            "mail_from": mail_from,
            "submitted_by": user,
            "message_id": completed.message_id,
            "client_ip": client_ip,
        }
        items: list[tuple[dict[str, Any], bytes]] = [
            ({**base, "rcpt_to": rcpts, "domain": domain}, signed)
            for domain, rcpts in group_by_domain(rcpt_to).items()
        ]
        try:
            ids = await asyncio.to_thread(self.spool.store, items)
        except SpoolFull:
            log.error("outbound spool full, submission deferred", extra={"user": user})
            return policy.SPOOL_FULL.render()
        except SpoolError as exc:
            log.error("outbound spool write failed", extra={"error": str(exc), "user": user})
            return policy.SPOOL_ERROR.render()
        for queue_id, (meta, _) in zip(ids, items, strict=True):
            log.info(
                "message queued for delivery",
                extra={
                    "queue_id": queue_id,
                    "domain": meta["domain"],
                    "rcpt_count": len(meta["rcpt_to"]),
                    "user": user,
                    "message_id": completed.message_id,
                    "size": len(signed),
                    "added_headers": list(completed.added),
                },
            )
        self._notify(ids)
        return f"{policy.QUEUED.code} {policy.QUEUED.enhanced} {policy.QUEUED.text} {' '.join(ids)}"

    def _notify(self, ids: list[str]) -> None:
        if self.on_queued is None:
            return
        try:
            self.on_queued(ids)
        except Exception:  # the messages are durable: a failing wake-up hook only delays them
            log.exception("on_queued hook failed", extra={"queue_id": ids[0]})


def group_by_domain(recipients: list[str]) -> dict[str, list[str]]:
    """Recipients by lowercased domain, in order of first appearance, duplicates dropped."""
    groups: dict[str, list[str]] = {}
    seen: set[str] = set()
    for rcpt in recipients:
        if rcpt.lower() in seen:
            continue
        seen.add(rcpt.lower())
        groups.setdefault(address_domain(rcpt), []).append(rcpt)
    return groups


class SubmissionServer:
    """The submission listener: `await start()`, then `port`; `await stop()` to close it."""

    def __init__(
        self,
        cfg: RelaySettings,
        *,
        spool: Spool,
        suppression: SuppressionList,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        metrics: Any | None = None,
    ) -> None:
        """`metrics`: counts AUTH lockouts (`auth_lockout(scope)`) when given."""
        sub = cfg.submission
        if not sub.tls_cert or not sub.tls_key:
            raise ValueError("submission.tls_cert and submission.tls_key are required")
        self._cfg = cfg
        self._host, self._requested_port = parse_hostport(sub.listen, "submission.listen")
        limiter = AuthLimiter(
            max_failures=sub.auth_failures_before_lockout,
            lockout_seconds=sub.lockout_seconds,
            clock=monotonic,
        )
        user_limiter = AuthLimiter(
            max_failures=sub.user_auth_failures_before_lockout,
            lockout_seconds=sub.lockout_seconds,
            clock=monotonic,
        )
        self._signer = DkimSigner(cfg.dkim)
        self._handler = SubmissionHandler(
            cfg,
            spool=spool,
            suppression=suppression,
            signer=self._signer,
            authenticator=Authenticator(
                sub.users,
                limiter,
                user_limiter=user_limiter,
                clock=monotonic,
                on_lockout=getattr(metrics, "auth_lockout", None),
            ),
            clock=clock,
        )
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[SubmissionSMTP] = weakref.WeakSet()

    @property
    def on_queued(self) -> Callable[[list[str]], None] | None:
        """Called with the new queue ids after each accepted message (the delivery runner's wake-up)."""
        return self._handler.on_queued

    @on_queued.setter
    def on_queued(self, hook: Callable[[list[str]], None] | None) -> None:
        self._handler.on_queued = hook

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            raise RuntimeError("submission server is not started")
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        sub = self._cfg.submission
        # Fail at start-up, not on the first message: unreadable keys or certificates are config errors.
        self._signer.check_keys()
        context = await asyncio.to_thread(tls_context, sub.tls_cert, sub.tls_key)
        self._server = await asyncio.get_running_loop().create_server(
            lambda: self._new_session(context), self._host, self._requested_port
        )
        log.info("submission listener started", extra={"listen": f"{self._host}:{self.port}"})

    def _new_session(self, context: ssl.SSLContext) -> SubmissionSMTP:
        session = SubmissionSMTP(
            self._handler,
            hostname=self._handler.hostname,
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            data_size_limit=self._cfg.submission.max_message_size,
            timeout=COMMAND_TIMEOUT,
            error_limits=self._cfg.smtp.error_limits(),  # the MX's; counted only until AUTH succeeds
        )
        self._sessions.add(session)
        return session

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        if self._handler.storing:
            await asyncio.wait(set(self._handler.storing), timeout=STOP_GRACE)
        sessions = list(self._sessions)
        # abort(), not close(): a TLS close waits for the client's close_notify, which an idle client
        # never sends. Whatever a session was doing, it has had no 250 yet.
        for session in sessions:
            if isinstance(session.transport, asyncio.WriteTransport):
                session.transport.abort()
        tasks = {s.session_task for s in sessions if s.session_task is not None and not s.session_task.done()}
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_GRACE)
        await self._server.wait_closed()
        self._server = None
        log.info("submission listener stopped")
