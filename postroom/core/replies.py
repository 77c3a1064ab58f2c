"""The one place that turns facts into SMTP replies.

Filters and the listener name a *reason* (a stable key); this table maps it to a reply with its basic and
enhanced status code (RFC 3463). Nothing else in Postroom writes reply numbers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    enhanced: str
    text: str

    def render(self, detail: str = "") -> str:
        text = f"{self.text}: {detail}" if detail else self.text
        # A reply line must stay one line of printable text whatever a filter put in `detail`.
        text = "".join(ch if ch.isprintable() else " " for ch in text)[:400]
        return f"{self.code} {self.enhanced} {text}"

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500


# Listener and routing replies.
QUEUED = Reply(250, "2.0.0", "queued as")
RELAY_DENIED = Reply(550, "5.7.1", "relay access denied")
UNKNOWN_TENANT = Reply(550, "5.1.1", "no such mailbox")
BAD_ADDRESS = Reply(553, "5.1.3", "bad recipient address syntax")
BAD_SENDER = Reply(553, "5.1.7", "bad sender address syntax")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "too many recipients")
MESSAGE_TOO_BIG = Reply(552, "5.3.4", "message size exceeds fixed limit")
SPOOL_FULL = Reply(452, "4.3.1", "insufficient system storage, try again later")
SPOOL_ERROR = Reply(451, "4.3.0", "local error in processing, try again later")
TOO_MANY_SESSIONS = Reply(421, "4.7.0", "too many connections, try again later")
TOO_MANY_FROM_IP = Reply(421, "4.7.0", "too many connections from your address, try again later")
SESSION_TOO_LONG = Reply(421, "4.4.2", "session time limit exceeded, closing connection")
SHUTTING_DOWN = Reply(421, "4.3.2", "service shutting down, try again later")
TENANT_BACKPRESSURE = Reply(451, "4.3.0", "mailbox temporarily unavailable, try again later")
# Protocol guards shared by both listeners (postroom/core/smtp_guard.py).
FORBIDDEN_CHARACTERS = Reply(501, "5.5.4", "control characters and invalid UTF-8 are not allowed here")
TOO_MANY_ERRORS = Reply(421, "4.7.0", "too many errors, closing connection")
AUTH_NOT_OFFERED = Reply(503, "5.5.1", "authentication is not offered here")

# Outbound submission (port 587) replies.
CLIENT_NOT_ALLOWED = Reply(554, "5.7.1", "access denied: client network not allowed")
AUTH_INVALID = Reply(535, "5.7.8", "authentication credentials invalid")
AUTH_LOCKED_OUT = Reply(454, "4.7.0", "too many failed authentication attempts, try again later")
SENDER_NOT_ALLOWED = Reply(553, "5.7.1", "sender address not allowed for this user")
MISSING_FROM = Reply(550, "5.6.0", "message must have a From: header with an address")

# Filter reasons. Keys are "<filter>.<fact>"; a filter may use a reason absent here, which then falls back
# to the generic reply for its outcome.
FILTER_REPLIES: dict[str, Reply] = {
    "dnsbl.listed": Reply(554, "5.7.1", "service unavailable; client host blocked"),
    "spf.fail": Reply(550, "5.7.23", "SPF validation failed"),
    "spf.temperror": Reply(451, "4.7.24", "SPF temporary error, try again later"),
    "spf.permerror": Reply(550, "5.7.24", "SPF record invalid"),
    "spf.softfail": Reply(550, "5.7.23", "SPF validation failed (softfail)"),
    "fqdn.helo_invalid": Reply(501, "5.5.2", "invalid HELO hostname"),
    "fqdn.helo_not_fqdn": Reply(504, "5.5.2", "HELO hostname must be a fully-qualified domain name"),
    "fqdn.sender_not_fqdn": Reply(504, "5.5.2", "sender address must contain a fully-qualified domain"),
    "fqdn.sender_domain_unknown": Reply(550, "5.1.8", "sender address rejected: domain not found"),
    "fqdn.sender_domain_temperror": Reply(450, "4.1.8", "sender address rejected: domain lookup failed"),
    "virus.found": Reply(554, "5.7.1", "message rejected: virus found"),
    "virus.oversize": Reply(552, "5.3.4", "message too large for virus scanning"),
    "virus.oversize_deferred": Reply(451, "4.3.4", "message too large for virus scanning, try again later"),
    "spam.reject": Reply(554, "5.7.1", "message rejected as spam"),
    "spam.soft_reject": Reply(451, "4.7.1", "message deferred, try again later"),
    "spam.greylist": Reply(451, "4.7.1", "greylisted, try again later"),
    "throttle.concurrency": Reply(421, "4.7.0", "too many concurrent connections, try again later"),
    "throttle.connection_rate": Reply(421, "4.7.0", "connection rate limit exceeded, try again later"),
    "throttle.message_rate": Reply(451, "4.7.0", "message rate limit exceeded, try again later"),
    "throttle.recipient_rate": Reply(451, "4.7.0", "recipient rate limit exceeded, try again later"),
    "throttle.blocked": Reply(554, "5.7.1", "client blocked"),
    "dmarc.reject": Reply(550, "5.7.1", "rejected by DMARC policy"),
    "suppression.suppressed": Reply(550, "5.1.1", "recipient address suppressed"),
}

GENERIC_FAIL = Reply(550, "5.7.1", "message rejected by policy")
GENERIC_TEMPFAIL = Reply(451, "4.7.1", "temporary failure in message checks, try again later")


def reply_for(reason: str, *, temporary: bool) -> Reply:
    """The reply for a filter reason.

    A `fail` takes its reason's reply (which may itself be temporary, e.g. greylisting); a `temperror` is an
    infrastructure fault and never yields a permanent reply, whatever its reason says.
    """
    reply = FILTER_REPLIES.get(reason)
    if temporary:
        return reply if reply is not None and reply.temporary else GENERIC_TEMPFAIL
    return reply if reply is not None else GENERIC_FAIL
