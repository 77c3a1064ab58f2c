"""Per-session limits on a misbehaving SMTP client, after Postfix's smtpd error limits.

Every 4xx/5xx reply is an error. Past `soft_error_limit` errors each further error reply waits
`error_sleep_time` seconds first (smtpd_error_sleep_time: a guesser gets slow, a real MTA barely notices); at
`hard_error_limit` errors the session ends with 421 (smtpd_hard_error_limit). Junk commands (NOOP, RSET,
VRFY, EXPN, HELP) are free up to `junk_command_limit` per session, then each counts as an error
(smtpd_junk_command_limit). A message accepted with 250 after DATA clears the count, as Postfix counts errors
"without delivering mail". Recipients over `max_recipients` (452 4.5.3) are no error up to
RECIPIENT_OVERSHOOT_LIMIT per session: a client pipelining a big recipient list must not be cut off for it
(Postfix's smtpd_recipient_overshoot_limit).

Also here: the test for characters no envelope command may hold: controls (RFC 5321 paths and domains contain
none) and bytes that are not UTF-8 (RFC 6531; aiosmtpd hands them on as lone surrogates, which no JSON
encoder, log line or remote MX accepts).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# C0 controls (NUL, CR, LF, TAB...), DEL, C1 controls and the Unicode line separators: none belongs in a
# HELO name or a path, and each is a way to smuggle a line break into a log line, a header or a ticket. Lone
# surrogates: the bytes of invalid UTF-8, as aiosmtpd's surrogateescape decoding leaves them.
_FORBIDDEN = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
# The refusal reason a session closed at the hard error limit is recorded under (the throttle counts it).
ERROR_LIMIT_REASON = "smtp.error_limit"


def has_forbidden_chars(text: str | None) -> bool:
    return text is not None and _FORBIDDEN.search(text) is not None


@dataclass(frozen=True, slots=True)
class ErrorLimits:
    hard_error_limit: int = 20
    soft_error_limit: int = 10
    error_sleep_time: float = 1.0
    junk_command_limit: int = 100


RECIPIENT_OVERSHOOT_LIMIT = 1000
TOO_MANY_RECIPIENTS_PREFIX = "452 4.5.3"


class ErrorCounter:
    """The error count of one session."""

    __slots__ = ("errors", "junk", "limits", "overshoot")

    def __init__(self, limits: ErrorLimits) -> None:
        self.limits = limits
        self.errors = 0
        self.junk = 0
        self.overshoot = 0

    def error(self, reply: str = "") -> float:
        """Count one error reply; returns how long to wait before sending it."""
        if reply.startswith(TOO_MANY_RECIPIENTS_PREFIX):
            self.overshoot += 1
            if self.overshoot <= RECIPIENT_OVERSHOOT_LIMIT:
                return 0.0
        self.errors += 1
        return self.limits.error_sleep_time if self.errors > self.limits.soft_error_limit else 0.0

    def junk_command(self) -> bool:
        """Count a junk command; True when it is one too many and counts as an error."""
        self.junk += 1
        return self.junk > self.limits.junk_command_limit

    def delivered(self) -> None:
        self.errors = 0

    @property
    def exhausted(self) -> bool:
        return self.errors >= self.limits.hard_error_limit
