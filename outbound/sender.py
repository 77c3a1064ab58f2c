"""One delivery session: connect to a destination's MX hosts in order and send a batch of envelopes.

The first host that accepts a connection (220 greeting, EHLO/HELO) carries as many envelopes as it will
take, one SMTP transaction each; envelopes never tried because that connection dropped go on to the next
host. Every recipient gets a result: the remote reply (250, 4xx, 5xx), or a local one with `remote=False`
when no host could be reached (always temporary).

TLS follows Postfix's "may" level by default: STARTTLS whenever offered, certificates not verified (an
MX's certificate rarely matches, and refusing it would only push the mail to plain text); when the
handshake fails the host is retried once in plain text. With `require_tls` (Postfix's "encrypt") a host
that does not offer or complete STARTTLS is skipped, and the mail is deferred if none does.

RSET is sent only after a transaction that was aborted (refused sender, no recipient accepted, DATA error):
a completed transaction already resets the server's state (RFC 5321 §4.1.1.4).
Every command, the connection and the TLS handshake are bounded by the configured timeouts.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import aiosmtplib

from outbound.mx import MxTarget

log = logging.getLogger("postroom.outbound.sender")

# Local results (no remote reply) use the code a remote would have used for the same condition.
CANNOT_CONNECT = 451
NEEDS_SMTPUTF8 = 553


@dataclass(frozen=True)
class Envelope:
    key: str  # the caller's handle for this transaction's results (the runner uses "<queue id>/<n>")
    mail_from: str  # the return path of this transaction; "" is the null sender
    rcpt_to: tuple[str, ...]
    raw: bytes


@dataclass(frozen=True)
class RecipientResult:
    rcpt: str
    code: int
    message: str
    remote: bool = True  # False: Postroom's own verdict (e.g. no MX reachable), not a server's reply

    @property
    def delivered(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return 500 <= self.code < 600

    @property
    def diagnostic(self) -> str:
        """For logs and DSNs: `550 5.1.1 no such user`."""
        return f"{self.code} {self.message}".strip()


@dataclass
class SessionResult:
    results: dict[str, list[RecipientResult]] = field(default_factory=dict)  # by envelope key
    relay: MxTarget | None = None  # the host that took the last transaction
    tls: bool = False

    def all_results(self) -> list[RecipientResult]:
        return [r for results in self.results.values() for r in results]

    @property
    def delivered_any(self) -> bool:
        return any(r.delivered for r in self.all_results())

    @property
    def failed_temporarily(self) -> bool:
        """Nothing got through and something was deferred: the feedback that slows a destination."""
        results = self.all_results()
        return not self.delivered_any and any(not r.permanent for r in results)


@dataclass(frozen=True)
class SessionSettings:
    helo_name: str
    connect_timeout: float
    command_timeout: float
    require_tls: bool = False
    domain: str = ""  # the destination, for logs


class _HostUnusable(Exception):
    """This host cannot take mail now; try the next one."""


async def deliver(
    targets: Sequence[MxTarget],
    envelopes: Sequence[Envelope],
    settings: SessionSettings,
    *,
    before_message: Callable[[], Awaitable[None]] | None = None,
) -> SessionResult:
    """Deliver `envelopes` through the first usable host in `targets`; a result for every recipient."""
    session = SessionResult()
    pending = list(envelopes)
    last_error = "no MX host to try"
    for target in targets:
        if not pending:
            break
        try:
            client, tls = await _open(target, settings)
        except _HostUnusable as exc:
            last_error = f"{target.hostname}[{target.address}]: {exc}"
            log.info(
                "MX host unusable",
                extra=_log_extra(settings, envelopes, mx=target.hostname, error=last_error),
            )
            continue
        session.relay, session.tls = target, tls
        try:
            while pending:
                envelope = pending[0]
                if before_message is not None:
                    await before_message()
                try:
                    session.results[envelope.key] = await _send_envelope(client, envelope)
                finally:
                    pending.pop(0)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError, OSError) as exc:
            last_error = f"lost connection with {target.hostname}[{target.address}]: {exc}"
            session.results[envelope.key] = _local_failures(envelope, CANNOT_CONNECT, last_error)
        finally:
            await _close(client, settings)
    for envelope in pending:
        session.results[envelope.key] = _local_failures(envelope, CANNOT_CONNECT, f"4.4.1 {last_error}")
    return session


async def _open(target: MxTarget, settings: SessionSettings) -> tuple[aiosmtplib.SMTP, bool]:
    """Connect, EHLO and (when offered) STARTTLS; the client and whether the session is encrypted."""
    client = await _connect(target, settings)
    if not client.supports_extension("starttls"):
        if settings.require_tls:
            await _close(client, settings)
            raise _HostUnusable("TLS is required, but the host does not offer STARTTLS")
        return client, False
    try:
        await client.starttls(server_hostname=target.hostname, tls_context=_opportunistic_tls())
        await _greet(client, settings)
        return client, True
    except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as exc:
        client.close()
        if settings.require_tls:
            raise _HostUnusable(f"TLS is required, but STARTTLS failed: {exc}") from None
        log.warning(
            "STARTTLS failed, retrying in plain text",
            extra={"domain": settings.domain, "mx": target.hostname, "error": str(exc)},
        )
    return await _connect(target, settings), False


async def _connect(target: MxTarget, settings: SessionSettings) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(
        hostname=target.address,
        port=target.port,
        local_hostname=settings.helo_name,
        timeout=settings.command_timeout,
        start_tls=False,
    )
    try:
        await client.connect(timeout=settings.connect_timeout)
        await _greet(client, settings)
    except (aiosmtplib.SMTPException, OSError) as exc:
        client.close()
        raise _HostUnusable(str(exc) or type(exc).__name__) from None
    return client


async def _greet(client: aiosmtplib.SMTP, settings: SessionSettings) -> None:
    try:
        await client.ehlo(hostname=settings.helo_name)
    except aiosmtplib.SMTPHeloError:
        await client.helo(hostname=settings.helo_name)


async def _send_envelope(client: aiosmtplib.SMTP, envelope: Envelope) -> list[RecipientResult]:
    """One transaction; connection-level errors propagate (the session is over)."""
    options, encoding = _mail_options(client, envelope)
    if encoding is None:
        return _local_failures(envelope, NEEDS_SMTPUTF8, "5.6.7 non-ASCII address, but the MX lacks SMTPUTF8")
    try:
        await client.mail(envelope.mail_from, options=options, encoding=encoding)
    except aiosmtplib.SMTPResponseException as exc:
        await _abort(client)
        return [RecipientResult(rcpt, exc.code, exc.message) for rcpt in envelope.rcpt_to]
    results: dict[str, RecipientResult] = {}
    accepted: list[str] = []
    for rcpt in envelope.rcpt_to:
        try:
            await client.rcpt(rcpt, encoding=encoding)
            accepted.append(rcpt)
        except aiosmtplib.SMTPRecipientRefused as exc:
            results[rcpt] = RecipientResult(rcpt, exc.code, exc.message)
    if not accepted:
        await _abort(client)
        return list(results.values())
    try:
        reply = await client.data(_with_final_newline(envelope.raw))
        code, message = reply.code, reply.message
    except aiosmtplib.SMTPDataError as exc:
        code, message = exc.code, exc.message
        await _abort(client)
    results.update({rcpt: RecipientResult(rcpt, code, message) for rcpt in accepted})
    return [results[rcpt] for rcpt in envelope.rcpt_to]


def _mail_options(client: aiosmtplib.SMTP, envelope: Envelope) -> tuple[list[str], str | None]:
    """MAIL FROM parameters, and the address encoding (None: needs SMTPUTF8 the server lacks)."""
    options: list[str] = []
    if not envelope.raw.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    if all(address.isascii() for address in (envelope.mail_from, *envelope.rcpt_to)):
        return options, "ascii"
    if not client.supports_extension("smtputf8"):
        return options, None
    return [*options, "SMTPUTF8"], "utf-8"


async def _abort(client: aiosmtplib.SMTP) -> None:
    # A server that refuses RSET or hangs up fails the next MAIL too, and that reply says why.
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        await client.rset()


async def _close(client: aiosmtplib.SMTP, settings: SessionSettings) -> None:
    if not client.is_connected:
        return
    try:
        await client.quit(timeout=min(settings.command_timeout, 10.0))
    except (aiosmtplib.SMTPException, OSError):
        client.close()


def _log_extra(settings: SessionSettings, envelopes: Sequence[Envelope], **fields: str) -> dict[str, object]:
    queue_ids = sorted({envelope.key.partition("/")[0] for envelope in envelopes})
    return {"domain": settings.domain, "queue_ids": queue_ids, **fields}


def _local_failures(envelope: Envelope, code: int, message: str) -> list[RecipientResult]:
    return [RecipientResult(rcpt, code, message, remote=False) for rcpt in envelope.rcpt_to]


def _with_final_newline(raw: bytes) -> bytes:
    return raw if raw.endswith(b"\n") else raw + b"\r\n"


@functools.cache
def _opportunistic_tls() -> ssl.SSLContext:
    """Encrypt without authenticating the MX (RFC 7435 opportunistic security)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
