"""Protocol guards both listeners (MX and submission) put in front of aiosmtpd's command handlers.

- HELO/EHLO/MAIL/RCPT arguments with control characters (NUL, CR, ...) or invalid UTF-8 get 501 5.5.4 before
  aiosmtpd parses them: they would otherwise reach the envelope, the ticket and a remote MX.
- With `error_limits`, Postfix-style error limits (postroom/core/smtp_limits.py): slowed replies past the
  soft limit, 421 and a closed connection at the hard limit, junk commands counted.
- With `offer_auth=False` (the MX), no AUTH in the EHLO reply and 503 5.5.1 to the AUTH command: an MX has
  no accounts, and advertising AUTH only invites credential stuffing.

A subclass that overrides `push` calls `screen_reply` before writing a reply and `after_reply` after it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP

from postroom.core.replies import AUTH_NOT_OFFERED, FORBIDDEN_CHARACTERS, TOO_MANY_ERRORS
from postroom.core.smtp_limits import ErrorCounter, ErrorLimits, has_forbidden_chars

log = logging.getLogger("postroom.smtp")

ErrorLimitHook = Callable[["GuardedSMTP"], None]


class GuardedSMTP(SMTP):
    def __init__(
        self,
        handler: Any,
        *,
        error_limits: ErrorLimits | None = None,
        offer_auth: bool = True,
        on_error_limit: ErrorLimitHook | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.init_guard(error_limits=error_limits, offer_auth=offer_auth, on_error_limit=on_error_limit)

    def init_guard(
        self,
        *,
        error_limits: ErrorLimits | None = None,
        offer_auth: bool = True,
        on_error_limit: ErrorLimitHook | None = None,
    ) -> None:
        """The guard's own state, after aiosmtpd's (a subclass that builds aiosmtpd's state another way
        calls this itself)."""
        self._errors = ErrorCounter(error_limits) if error_limits is not None else None
        self._offer_auth = offer_auth
        self._on_error_limit = on_error_limit
        self._count_next_reply = False  # a junk command over its limit: its reply counts as an error
        self._after_354 = False  # the next reply ends a DATA: a 250 there is a delivered message
        self._cut_off = False
        if not offer_auth:
            self._auth_methods.clear()

    # ---- replies ------------------------------------------------------------------------------------------

    async def screen_reply(self, status: str) -> str | None:
        """The reply to send (after any error delay), or None to send nothing."""
        if self._cut_off:
            return None
        if not self._offer_auth and status.startswith("250-AUTH"):
            return None
        counter = self._errors
        if counter is None or not self.errors_counted():
            return status
        if status[:1] in ("4", "5") or self._count_next_reply:
            self._count_next_reply = False
            delay = counter.error(status)
            if delay:
                await asyncio.sleep(delay)
        elif self._after_354 and status.startswith("250"):
            counter.delivered()
        self._after_354 = status.startswith("354")
        return status

    def errors_counted(self) -> bool:
        """Whether error replies count toward the limits now (a subclass may exempt a trusted client)."""
        return True

    def after_reply(self) -> None:
        """At the hard error limit: say 421, close, and end the command loop at once (pipelined commands
        already buffered are never processed)."""
        if self._errors is None or not self._errors.exhausted or self._cut_off:
            return
        self._cut_off = True
        peer = getattr(self.session, "peer", None)
        log.warning(
            "too many errors, disconnecting",
            extra={"event": "error_limit", "errors": self._errors.errors, "peer": str(peer)},
        )
        if self._on_error_limit is not None:
            self._on_error_limit(self)
        self.close_with(TOO_MANY_ERRORS.render())
        # Ends aiosmtpd's command loop the way a lost connection does (its handler closes the writer).
        raise asyncio.CancelledError

    def close_with(self, reply: str) -> None:
        """A last reply, then close."""
        transport = self.transport
        if transport is not None:
            write = getattr(transport, "write", None)
            if write is not None:
                write(reply.encode() + b"\r\n")
            transport.close()

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str):
            screened = await self.screen_reply(status)
            if screened is None:
                return
            await super().push(screened)
        else:
            await super().push(status)
        self.after_reply()

    # ---- commands -----------------------------------------------------------------------------------------

    async def _refused_characters(self, arg: str | None) -> bool:
        if has_forbidden_chars(arg):
            await self.push(FORBIDDEN_CHARACTERS.render())
            return True
        return False

    async def smtp_HELO(self, hostname: str) -> None:
        if not await self._refused_characters(hostname):
            await super().smtp_HELO(hostname)

    async def smtp_EHLO(self, hostname: str) -> None:
        if not await self._refused_characters(hostname):
            await super().smtp_EHLO(hostname)

    async def smtp_MAIL(self, arg: str | None) -> None:
        if not await self._refused_characters(arg):
            await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg: str | None) -> None:
        if not await self._refused_characters(arg):
            await super().smtp_RCPT(arg)

    async def smtp_AUTH(self, arg: str) -> None:
        if self._offer_auth:
            await super().smtp_AUTH(arg)
        else:
            await self.push(AUTH_NOT_OFFERED.render())

    def _junk(self) -> None:
        if self._errors is not None and self._errors.junk_command():
            self._count_next_reply = True

    async def smtp_NOOP(self, arg: str) -> None:
        self._junk()
        await super().smtp_NOOP(arg)

    async def smtp_RSET(self, arg: str) -> None:
        self._junk()
        await super().smtp_RSET(arg)

    async def smtp_VRFY(self, arg: str) -> None:
        self._junk()
        await super().smtp_VRFY(arg)

    async def smtp_EXPN(self, arg: str) -> None:
        self._junk()
        await super().smtp_EXPN(arg)

    async def smtp_HELP(self, arg: str) -> None:
        self._junk()
        await super().smtp_HELP(arg)


# aiosmtpd's HELP reads each command's syntax from attributes its @syntax decorator put on the method.
for _name in ("HELO", "EHLO", "MAIL", "RCPT", "AUTH", "NOOP", "RSET", "VRFY", "EXPN", "HELP"):
    _ours, _theirs = getattr(GuardedSMTP, f"smtp_{_name}"), getattr(SMTP, f"smtp_{_name}")
    for _attr in ("__smtp_syntax__", "__smtp_syntax_extended__", "__smtp_syntax_when__"):
        if hasattr(_theirs, _attr):
            setattr(_ours, _attr, getattr(_theirs, _attr))
