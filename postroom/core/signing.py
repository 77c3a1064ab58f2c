"""The webhook signature: how a helpdesk knows a request came from Postroom and was not altered or replayed.

The header value is ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, b"<t>." + body)>``. The timestamp is part
of the signed bytes, so a captured request cannot be replayed later with a fresh timestamp, and a receiver
rejects timestamps outside a tolerance window. While a secret is being rotated the sender may include several
``v1=`` entries (one per secret); a receiver accepts the request when any of them matches its own secret.
Unknown keys (a future ``v2=``) are ignored so the scheme can evolve without breaking receivers.

This module is the reference implementation for docs/webhook.md; keep the two in step.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

SIGNATURE_HEADER = "X-Postroom-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE = 300.0

# Bounds on what a receiver is willing to parse: a header is a handful of short entries.
_MAX_HEADER_CHARS = 4096
_MAX_SIGNATURES = 8


def compute_signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``b"<timestamp>." + body`` under `secret`."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii"), hashlib.sha256)
    mac.update(body)
    return mac.hexdigest()


def sign(secret: str, body: bytes, timestamp: int, *, old_secrets: Sequence[str] = ()) -> str:
    """The header value for `body` sent at `timestamp`.

    `old_secrets` adds one more ``v1=`` entry per secret, so receivers still holding a previous secret keep
    verifying during a rotation.
    """
    entries = [f"t={timestamp}"]
    entries.extend(f"{SCHEME}={compute_signature(s, body, timestamp)}" for s in (secret, *old_secrets))
    return ",".join(entries)


def verify(
    secret: str, body: bytes, header_value: str, *, now: float, tolerance: float = DEFAULT_TOLERANCE
) -> bool:
    """True when `header_value` carries a valid signature of `body` made within `tolerance` seconds of `now`.

    Timestamps too far in the past (a replay) or the future (a skewed or forged clock) are rejected. Every
    comparison is constant-time.
    """
    parsed = _parse(header_value)
    if parsed is None:
        return False
    timestamp, candidates = parsed
    if abs(now - timestamp) > tolerance:
        return False
    expected = compute_signature(secret, body, timestamp).encode("ascii")
    # Compare against every candidate, without stopping early, so timing says nothing about which matched.
    # Bytes, because compare_digest refuses non-ASCII str and the header is attacker-controlled.
    matches = [hmac.compare_digest(expected, candidate.encode("utf-8")) for candidate in candidates]
    return any(matches)


def _parse(header_value: str) -> tuple[int, list[str]] | None:
    """(timestamp, v1 signatures) or None when the header is malformed."""
    if len(header_value) > _MAX_HEADER_CHARS:
        return None
    timestamp: int | None = None
    candidates: list[str] = []
    for entry in header_value.split(","):
        key, sep, value = entry.strip().partition("=")
        if not sep:
            return None
        if key == "t":
            if timestamp is not None or not (value.isascii() and value.isdigit()):
                return None
            timestamp = int(value)
        elif key == SCHEME:
            candidates.append(value)
    if timestamp is None or not candidates or len(candidates) > _MAX_SIGNATURES:
        return None
    return timestamp, candidates
