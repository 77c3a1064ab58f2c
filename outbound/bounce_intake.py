"""Bounces in both directions.

Outgoing: `queue_dsn` puts an RFC 3464 DSN for failed recipients into the outbound spool, addressed to the
original envelope sender and sent with the null sender (RFC 5321 §4.5.5), so a DSN that itself fails is
never bounced again. A message whose sender was null (a bounce) gets no DSN at all.

Incoming: `BounceProcessor` handles mail that arrives at Postroom's inbound MX for a VERP address
(`bounce+<token>@<bounce_domain>`). The listener asks `is_bounce_address` at RCPT — true only for a token
this relay made, so a forged or mangled address is refused like any unknown recipient — and hands the
message to `process` at DATA instead of making a ticket. A bounce that reports a permanent failure (found
by flufl.bounce, which understands DSNs and most non-standard bounce formats) puts the recipient the
token names on the suppression list. The token, not the bounce's text, says which address is suppressed:
a bounce cannot name an address Postroom did not send to. Delay notices and auto-replies (which also go to
the envelope sender) suppress nothing.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Literal

from flufl.bounce import all_failures

from outbound.dsn import FailedRecipient, build_dsn
from outbound.suppression import SuppressionList
from outbound.verp import VerpToken, parse_return_path
from postroom.core.header_values import HeaderInjection
from postroom.core.spool import Spool

log = logging.getLogger("postroom.outbound.bounces")

DSN_SUBMITTER = "postroom-dsn"

BounceAction = Literal["suppressed", "not_permanent", "invalid_token"]


async def queue_dsn(
    spool: Spool,
    *,
    original_meta: dict[str, object],
    original_raw: bytes,
    failures: list[FailedRecipient],
    reporting_mta: str,
    now: float,
) -> str | None:
    """Queue a DSN about `failures` to the original sender; its queue id, or None for a null sender."""
    queue_id = str(original_meta.get("id", ""))
    sender = str(original_meta.get("mail_from") or "")
    if not sender:
        log.info(
            "no DSN for a message from the null sender",
            extra={"queue_id": queue_id, "domain": original_meta.get("domain")},
        )
        return None
    queued_at = original_meta.get("queued_at")
    try:
        dsn = build_dsn(
            reporting_mta=reporting_mta,
            recipient=sender,
            original_queue_id=queue_id,
            original_raw=original_raw,
            arrival=float(queued_at) if isinstance(queued_at, int | float) else now,
            failures=failures,
            now=now,
        )
    except HeaderInjection as exc:
        log.error(
            "no DSN: it would carry a header injection", extra={"queue_id": queue_id, "error": str(exc)}
        )
        return None
    domain = sender.rpartition("@")[2].lower()
    meta: dict[str, object] = {
        "kind": "outbound",
        "mail_from": "",
        "rcpt_to": [sender],
        "domain": domain,
        "submitted_by": DSN_SUBMITTER,
        "message_id": dsn.message_id,
        "client_ip": "",
        "dsn_for": queue_id,
    }
    (dsn_id,) = await asyncio.to_thread(spool.store, [(meta, dsn.raw)])
    log.info(
        "DSN queued",
        extra={
            "queue_id": queue_id,
            "domain": domain,
            "dsn_id": dsn_id,
            "failed": [f.rcpt for f in failures],
        },
    )
    return dsn_id


@dataclass(frozen=True)
class BounceResult:
    action: BounceAction
    token: VerpToken | None = None
    permanent: list[str] = field(default_factory=list)  # what the bounce itself reports
    temporary: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)


class BounceProcessor:
    def __init__(
        self,
        *,
        bounce_domain: str,
        secret: str,
        suppression: SuppressionList,
        suppression_ttl: float | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.bounce_domain = bounce_domain.lower()
        # Where a bounce's MIME is parsed: CPU work on hostile input, kept off the event loop (None: the
        # loop's default threads).
        self._executor = executor
        self._secret = secret
        self._suppression = suppression
        self._ttl = suppression_ttl

    def is_bounce_address(self, rcpt: str) -> bool:
        """True for a VERP address this relay made (checked at RCPT by the inbound listener)."""
        return self._token(rcpt) is not None

    async def process(self, rcpt: str, raw: bytes) -> BounceResult:
        """Read a bounce that arrived for `rcpt`; suppress the recipient on a permanent failure."""
        token = self._token(rcpt)
        if token is None:
            log.warning("bounce for an address without a valid VERP token ignored", extra={"rcpt": rcpt})
            return BounceResult("invalid_token")
        loop = asyncio.get_running_loop()
        temporary, permanent = await loop.run_in_executor(self._executor, reported_failures, raw)
        extra = {
            "queue_id": token.queue_id,
            "domain": token.recipient.rpartition("@")[2],
            "rcpt": token.recipient,
        }
        if not permanent:
            log.info("bounce reports no permanent failure, nothing suppressed", extra=extra)
            return BounceResult("not_permanent", token, permanent, temporary)
        reason = f"bounce for queue id {token.queue_id}: {', '.join(permanent)} failed permanently"
        await self._suppression.add(token.recipient, reason=reason, source="bounce", ttl=self._ttl)
        log.info("bounce received, recipient suppressed", extra={**extra, "reported": permanent})
        return BounceResult("suppressed", token, permanent, temporary, [token.recipient])

    def _token(self, rcpt: str) -> VerpToken | None:
        return parse_return_path(rcpt, bounce_domain=self.bounce_domain, secret=self._secret)


def reported_failures(raw: bytes) -> tuple[list[str], list[str]]:
    """(temporary, permanent) failed recipients a bounce reports, sorted. Blocking: parses the MIME."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    temporary_raw, permanent_raw = all_failures(message)
    return sorted(_decode(a) for a in temporary_raw), sorted(_decode(a) for a in permanent_raw)


def _decode(address: bytes) -> str:
    return address.decode("ascii", "replace").lower()
