"""aiosmtpd's SMTP protocol as the submission listener needs it.

Three additions, each where aiosmtpd (1.4.x) offers no hook: a client outside the allowed networks
is refused before the 220 greeting; aiosmtpd's own replies get RFC 3463 enhanced status codes; and AUTH
credentials, which aiosmtpd hands to a synchronous callback, are verified by an async hook instead, so the
scrypt check runs in a worker thread rather than on the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
from typing import Any, AnyStr, Protocol

from aiosmtpd.smtp import MISSING, AuthResult, Envelope, Session

from postroom.core.replies import AUTH_INVALID
from postroom.core.smtp_guard import GuardedSMTP
from postroom.core.smtpserver import with_enhanced_code


class SubmissionHooks(Protocol):
    def connection_refusal(self, session: Session) -> str | None:
        """The reply refusing a new client, or None to greet it."""

    async def verify(self, server: SubmissionSMTP, result: AuthResult) -> AuthResult:
        """Turn aiosmtpd's undecided AUTH result (credentials in `auth_data`) into the final one."""


def peer_ip(session: Session) -> str:
    """The client's IP address as text; an IPv4-mapped IPv6 address becomes plain IPv4."""
    peer = session.peer
    host = peer[0] if isinstance(peer, tuple) else str(peer)
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def _defer_to_async_check(
    server: Any, session: Session, envelope: Envelope, mechanism: str, credentials: Any
) -> AuthResult:
    # aiosmtpd calls its authenticator synchronously; hand the credentials back so that
    # SubmissionSMTP can verify them off the event loop.
    return AuthResult(success=False, handled=False, auth_data=credentials)


class _QuietSession(Session):
    """aiosmtpd's own AUTH code sets the deprecated `login_data`, logging a warning on every login."""

    @property
    def login_data(self) -> Any:
        return self._login_data

    @login_data.setter
    def login_data(self, value: Any) -> None:
        self._login_data = value


class SubmissionSMTP(GuardedSMTP):
    """aiosmtpd's protocol, plus: disallowed networks refused before the greeting, RFC 3463 enhanced codes on
    aiosmtpd's own replies, AUTH credentials verified asynchronously by the handler, and the shared guards of
    postroom/core/smtp_guard.py (control characters in the envelope refused, error limits until AUTH)."""

    def __init__(self, handler: SubmissionHooks, **kwargs: Any) -> None:
        super().__init__(handler, authenticator=_defer_to_async_check, **kwargs)
        self.submission = handler
        self.session_task: asyncio.Task[Any] | None = None  # so that a stopping server can wait for it

    def _create_session(self) -> Session:
        return _QuietSession(self.loop)

    async def _handle_client(self) -> None:
        # aiosmtpd (1.4.x) has no connect hook; this runs before its 220 greeting.
        assert self.session is not None and self.transport is not None
        self.session_task = asyncio.current_task()
        refusal = self.submission.connection_refusal(self.session)
        if refusal is not None:
            await self.push(refusal)
            self.transport.close()
            return
        await super()._handle_client()

    def errors_counted(self) -> bool:
        # Until AUTH succeeds the client is anyone on an allowed network; after it, its errors (suppressed
        # recipients of a big notification) are its application's business, not an attack.
        return not (self.session is not None and self.session.authenticated)

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            await super().push(with_enhanced_code(status))
        else:
            await super().push(status)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:  # credentials after an empty challenge: read them here, to see the authzid
            response = await self.challenge_auth("")
            if response is MISSING:
                return AuthResult(success=False)
            args = [args[0], base64.b64encode(bytes(response)).decode("ascii")]
        if _asks_to_act_as_another(args[1]):
            # RFC 4616 §2: a server that lets no one act as another user MUST fail such an exchange.
            # aiosmtpd ignores the authorization identity, which would log the client in as itself.
            return AuthResult(success=False, handled=False, message=AUTH_INVALID.render())
        return await self.submission.verify(self, await super().auth_PLAIN(_, args))

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        return await self.submission.verify(self, await super().auth_LOGIN(_, args))


def _asks_to_act_as_another(encoded: str) -> bool:
    """Whether an AUTH PLAIN message names an authorization identity other than its login."""
    try:
        parts = base64.b64decode(encoded.encode("ascii"), validate=True).split(b"\0")
    except (ValueError, UnicodeEncodeError):
        return False  # aiosmtpd answers malformed base64 itself
    return len(parts) == 3 and parts[0] not in (b"", parts[1])
