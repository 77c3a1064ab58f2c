"""VERP envelope senders: `bounce+<mac>-<queue id>-<recipient>@<bounce_domain>`.

A bounce comes back to the envelope sender, so encoding the outbound queue id and the recipient there tells
Postroom's inbound MX exactly which delivery failed, whatever the remote DSN looks like (Mailman and
Postfix's VERP do the same). The recipient is written the classic readable way, `local=domain`; when its
local part is not a plain dot-atom (quoted strings, non-ASCII) it is base32 instead, which never contains
`=`, so the two forms cannot be confused.

Remote MTAs may change the case of a local part, so every part is case-insensitive: the queue id is hex,
the MAC base32, and the recipient is lower-cased before it is encoded and authenticated.

The MAC (HMAC-SHA256 over queue id and recipient, truncated to 64 bits) means a forged bounce cannot name
an address Postroom never sent to: only tokens this relay made verify.

Length: 41 characters plus the encoded recipient, so RFC 5321's 64-character local part holds recipients
up to 23 characters; longer ones give longer local parts, which the big providers and Postfix/Exim accept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

LOCAL_PREFIX = "bounce+"
_MAC_BYTES = 8  # 64 bits: forging one would take ~2^63 bounces sent to us
_DOT_ATOM = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_DOMAIN = re.compile(r"[a-z0-9-]+(?:\.[a-z0-9-]+)*")
_QUEUE_ID = re.compile(r"[0-9A-F]{1,32}")
_VERP_KEY_LABEL = b"postroom/verp/1"


@dataclass(frozen=True)
class VerpToken:
    queue_id: str
    recipient: str  # lower-cased


def verp_key(secret: str) -> bytes:
    """The MAC key, derived from a configured secret so the secret itself never meets a remote MTA's log."""
    return hmac.new(secret.encode(), _VERP_KEY_LABEL, hashlib.sha256).digest()


def make_return_path(queue_id: str, rcpt: str, *, bounce_domain: str, secret: str) -> str:
    """The envelope sender for delivering queue entry `queue_id` to `rcpt`."""
    queue_id = queue_id.upper()
    if not _QUEUE_ID.fullmatch(queue_id):
        raise ValueError(f"not a queue id: {queue_id!r}")
    recipient = rcpt.lower()
    mac = _mac(queue_id, recipient, secret)
    return f"{LOCAL_PREFIX}{mac}-{queue_id.lower()}-{_encode_recipient(recipient)}@{bounce_domain.lower()}"


def parse_return_path(address: str, *, bounce_domain: str, secret: str) -> VerpToken | None:
    """The queue id and recipient a VERP address names; None if it is not one of ours or fails the MAC."""
    local, at, domain = address.strip().strip("<>").rpartition("@")
    if not at or domain.lower().rstrip(".") != bounce_domain.lower():
        return None
    local = local.lower()
    if not local.startswith(LOCAL_PREFIX):
        return None
    parts = local[len(LOCAL_PREFIX) :].split("-", 2)
    if len(parts) != 3:
        return None
    mac, queue_id, encoded = parts
    queue_id = queue_id.upper()
    recipient = _decode_recipient(encoded)
    if recipient is None or not _QUEUE_ID.fullmatch(queue_id):
        return None
    if not hmac.compare_digest(mac, _mac(queue_id, recipient, secret)):
        return None
    return VerpToken(queue_id, recipient)


def _mac(queue_id: str, recipient: str, secret: str) -> str:
    message = f"{queue_id}\0{recipient}".encode()
    digest = hmac.new(verp_key(secret), message, hashlib.sha256).digest()[:_MAC_BYTES]
    return base64.b32encode(digest).decode().rstrip("=").lower()


def _encode_recipient(recipient: str) -> str:
    local, _, domain = recipient.rpartition("@")
    if _DOT_ATOM.fullmatch(local) and _DOMAIN.fullmatch(domain):
        return f"{local}={domain}"
    return base64.b32encode(recipient.encode()).decode().rstrip("=").lower()


def _decode_recipient(encoded: str) -> str | None:
    if "=" in encoded:
        local, _, domain = encoded.rpartition("=")
        return f"{local}@{domain}" if local and domain else None
    padded = encoded.upper() + "=" * (-len(encoded) % 8)
    try:
        return base64.b32decode(padded).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
