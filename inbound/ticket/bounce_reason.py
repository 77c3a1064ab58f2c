"""Why did delivery to one recipient fail, in a small vocabulary a helpdesk can act on?

`classify_failure` turns an RFC 3463 status code and the remote server's words into a `kind` and a `reason`:

- kind: ``permanent`` (a DSN "failed", status 5.x.x, SMTP 5xx, or a failure with no code) or ``transient``
  (a DSN "delayed", 4.x.x, 4xx);
- reason, the first that applies:
  ``mailbox_full`` (quota, 5.2.2), ``message_too_large`` (size limits, 5.3.4, 5.2.3),
  ``host_unknown`` (no such domain or host, 5.1.2, 5.4.4), ``spam_blocked`` (spam, block lists, reputation),
  ``user_unknown`` (no such user, disabled mailbox, 5.1.1, 5.1.0, 5.1.6, 5.2.1),
  ``rejected`` (relaying denied, policy, 5.7.x), ``expired`` (gave up retrying, 4.4.7, 5.4.7),
  ``other``.
A precise status code (5.1.1, 5.2.2, ...) decides first; otherwise the words decide before the code:
"550 5.7.1 ... listed at zen.spamhaus.org" is spam_blocked, not a generic rejection. Patterns are matched
on at most `MAX_TEXT_CHARS` characters.
"""

from __future__ import annotations

import re

from inbound.ticket.dsn import status_code

MAX_TEXT_CHARS = 4_000
REASONS = (
    "user_unknown",
    "mailbox_full",
    "host_unknown",
    "rejected",
    "spam_blocked",
    "message_too_large",
    "expired",
    "other",
)

_USER = r"(?:mailbox|user(?:name)?|recipient|address(?:ee)?|account|e-?mail|destination|local part)"
_WORDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (
        "mailbox_full",
        re.compile(
            r"quota|mail\s?box\s+(?:is\s+)?(?:\w+\s+)?full|(?:mail)?folder\s+is\s+full|storage"
            r"|exceeds?\s+allowed\s+size|insufficient\s+(?:disk\s+)?space|mailbox\s+size\s+limit"
            r"|user\s+has\s+exceeded|too\s+many\s+messages|zuviele\s+Mails|over\s?quota|full\s+mailbox"
            r"|disk\s+space|mailbox\s+size",
            re.IGNORECASE,
        ),
    ),
    (
        "message_too_large",
        re.compile(
            r"(?:message|mail|e-?mail)\s+(?:is\s+)?too\s+(?:large|big)|too\s+large|size\s+(?:limit\s+)?exceed"
            r"|class=size|exceeds?\s+(?:the\s+)?(?:maximum\s+)?(?:message\s+)?size|message\s+size\s+(?:limit|exceed)"
            r"|max(?:imum)?\s+message\s+size|message\s+length\s+exceeds",
            re.IGNORECASE,
        ),
    ),
    (
        "host_unknown",
        re.compile(
            r"(?:domain|host|service)\s+(?:name\s+)?(?:not\s+found|unknown|not\s+known|does\s?n[o']?t\s+exist)"
            r"|no\s+such\s+domain|unknown\s+(?:domain|host)|name\s+service\s+error|domain\s+syntax"
            r"|malformed\s+(?:or\s+unexpected\s+)?name\s+server\s+reply|mx\s+(?:record\s+)?(?:not\s+found|lookup)"
            r"|no\s+mx\s+record|bad\s+destination\s+(?:mailbox\s+)?address|unresolvable|dns\s+(?:error|failure)",
            re.IGNORECASE,
        ),
    ),
    (
        "spam_blocked",
        re.compile(
            r"spam|junk|\bbulk\b|unsolicited|black\s?list|block\s?list|deny\s?list|\brbl\b|dnsbl|\bbanned\b"
            r"|\bblocked\b|reputation|content\s+(?:filter|rejected)|rejected\s+(?:due\s+to|for)\s+content"
            r"|virus|not\s+accepted\s+for\s+policy|sorbs|spamhaus|spamcop|barracuda|uribl|surbl|(?<!not\s)listed\s+(?:at|in|on)"
            r"|mass\s+mailer|looks\s+like|suspicious|scor(?:e|ed)\s+too\s+high|mail\s+appears|whitelist|challenge",
            re.IGNORECASE,
        ),
    ),
    (
        "user_unknown",
        re.compile(
            rf"{_USER}\s+(?:\S+\s+){{0,2}}(?:is\s+)?(?:un|not\s+)(?:known|recogni[sz]ed|found|valid|available|listed)"
            rf"|{_USER}\s+(?:\S+\s+){{0,2}}(?:does\s?n[o']?t|did\s?n[o']?t)\s+exist|{_USER}\s+(?:is\s+)?(?:disabled|deactivated|inactive|suspended|expired|closed|unavailable)"
            rf"|no\s+(?:such\s+)?{_USER}|unknown\s+{_USER}|invalid\s+{_USER}|{_USER}\s+invalid|unrouteable\s+address"
            r"|does\s?n[o']?t\s+(?:exist|have\s+a\s+\S+\s+account)|not\s+listed\s+in|no\s+longer\s+(?:active|valid|exists?|in\s+use)"
            r"|not\s+our\s+customer|unknown\s+or\s+illegal\s+alias|no\s+mailbox\s+here|user\s+not\s+found|nonexist"
            r"|not\s+a\s+valid\s+(?:mailbox|user)|unknown\s+local|non-?existent|no\s+account|account\s+(?:has\s+been\s+)?(?:disabled|removed|deleted)"
            rf"|not\s+an?\s+(?:known|active|valid)\s+{_USER}|no\s+mail\s*box|bad_?\s*recipient"
            rf"|(?:deactivated|disabled|inactive)\s+{_USER}"
            r"|Benutzer\s+unbekannt|nie\s+istnieje|nieznany|neexistuje|inexistant|inexistente|sconosciuto",
            re.IGNORECASE,
        ),
    ),
    (
        "rejected",
        re.compile(
            r"relay(?:ing)?\s+(?:denied|not\s+permitted|access\s+denied|prohibited)|not\s+(?:permitted\s+to\s+)?relay"
            r"|as\s+a\s+relay|rcpthosts|access\s+denied|not\s+authori[sz]ed|administrative\s+prohibition|refused|prohibited"
            r"|policy|rejected",
            re.IGNORECASE,
        ),
    ),
    (
        "expired",
        re.compile(
            r"retry\s+(?:time(?:out)?\s+)?(?:exceeded|expired)|expired|gave\s+up|giving\s+up|too\s+long"
            r"|could\s+not\s+be\s+delivered\s+(?:for|within)\s+\d+\s+(?:days|hours)|timed?\s*out",
            re.IGNORECASE,
        ),
    ),
)
_STATUS_REASONS: dict[str, str] = {
    "5.3.4": "message_too_large",
    "5.2.3": "message_too_large",
    "5.2.2": "mailbox_full",
    "4.2.2": "mailbox_full",
    "5.1.2": "host_unknown",
    "5.4.4": "host_unknown",
    "4.4.4": "host_unknown",
    "5.1.1": "user_unknown",
    "5.1.10": "user_unknown",  # Exchange Online: recipient not found by SMTP address lookup
    "5.1.0": "user_unknown",
    "5.1.6": "user_unknown",
    "5.2.1": "user_unknown",
    "5.1.3": "user_unknown",
    "5.7.1": "rejected",
    "4.4.7": "expired",
    "5.4.7": "expired",
}
# The reply was to MAIL FROM (Exim: "SMTP error ... after MAIL FROM:<...>", Postfix: "(in reply to MAIL FROM
# command)"): the server refused the sender, not the recipient.
_SENDER_REFUSED = re.compile(r"after\s+MAIL\s+FROM\b|in\s+reply\s+to\s+MAIL\s+FROM\b", re.IGNORECASE)
# Codes whose reason the words may refine: 5.7.1 is any policy rejection (spam among them).
_WORDS_DECIDE = frozenset({"rejected", "expired"})
_SMTP_CODE = re.compile(r"(?<![\d.])([245])\d\d(?![\d.])")


def classify_failure(status: str | None, text: str, *, action: str = "") -> tuple[str, str]:
    """(kind, reason) for one recipient. `text` is the diagnostic (or the bounce's explanation); `action`
    the DSN action: "delayed" is always transient, "failed" always permanent (the MTA has given up, even
    when its status says 4.4.7), otherwise the status or SMTP code decides."""
    text = text[:MAX_TEXT_CHARS]
    status = status or status_code(text)
    return _kind(status, text, action=action), failure_reason(status, text)


def failure_reason(status: str | None, text: str) -> str:
    if _SENDER_REFUSED.search(text):
        return _sender_refused_reason(text)
    exact = _STATUS_REASONS.get(status or "")
    if exact and exact not in _WORDS_DECIDE:  # a precise code outranks the server's free text
        return exact
    for reason, pattern in _WORDS:
        if pattern.search(text):
            return reason
    if status:
        exact = _STATUS_REASONS.get(status)
        if exact:
            return exact
        if status[2:].startswith("7."):
            return "rejected"
    return "other"


def _sender_refused_reason(text: str) -> str:
    """The server refused the envelope sender: its "no such domain" or "unknown user" is about the sender, not
    the recipient, so the reason is a policy rejection, unless it names spam or the message's size."""
    for reason, pattern in _WORDS:
        if reason in ("spam_blocked", "message_too_large") and pattern.search(text):
            return reason
    return "rejected"


def _kind(status: str | None, text: str, *, action: str) -> str:
    if action in ("delayed", "failed"):
        return "transient" if action == "delayed" else "permanent"
    if status:
        return "transient" if status.startswith("4") else "permanent"
    match = _SMTP_CODE.search(text)
    return "transient" if match and match.group(1) == "4" else "permanent"
