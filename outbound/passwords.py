"""Salted scrypt password hashes for submission accounts.

A hash is self-describing — ``scrypt$<n>$<r>$<p>$<salt b64>$<hash b64>`` — so the cost can be raised later
without invalidating existing hashes. Verification takes ~100 ms of CPU and 32 MiB at the default cost:
async callers run it in a thread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass

SCHEME = "scrypt"
# n=2**15, r=8 (32 MiB, ~0.1 s) balances brute-force cost against one hash per new SMTP session.
DEFAULT_N = 2**15
DEFAULT_R = 8
DEFAULT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
# Refuse parameters beyond these when verifying: a hash pasted into the config must not be able to make
# each AUTH take gigabytes or minutes.
MAX_N = 2**20
MAX_R = 32
MAX_P = 16
_MAXMEM_SLACK = 1024 * 1024


class PasswordHashError(ValueError):
    """A stored hash is not a well-formed scrypt hash string."""


@dataclass(frozen=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    def encode(self) -> str:
        salt = base64.b64encode(self.salt).decode()
        key = base64.b64encode(self.key).decode()
        return f"{SCHEME}${self.n}${self.r}${self.p}${salt}${key}"


def _derive(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # scrypt needs about 128·n·r bytes; allow twice that so OpenSSL never refuses a valid parameter set.
    maxmem = 256 * n * r + _MAXMEM_SLACK
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=maxmem, dklen=dklen)


def hash_password(password: str, *, n: int = DEFAULT_N, r: int = DEFAULT_R, p: int = DEFAULT_P) -> str:
    """A new salted hash of `password`, as stored in `[[submission.users]] password_hash`."""
    if not password:
        raise ValueError("password must not be empty")
    _check_cost(n, r, p)
    salt = os.urandom(SALT_BYTES)
    return PasswordHash(n, r, p, salt, _derive(password, salt, n, r, p, KEY_BYTES)).encode()


def parse_password_hash(encoded: str) -> PasswordHash:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise PasswordHashError("expected 'scrypt$n$r$p$salt$hash'")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt = base64.b64decode(parts[4], validate=True)
        key = base64.b64decode(parts[5], validate=True)
    except (ValueError, binascii.Error):
        raise PasswordHashError("malformed number or base64 in scrypt hash") from None
    _check_cost(n, r, p)
    if len(salt) < 8 or len(key) < 16:
        raise PasswordHashError("salt or hash too short")
    return PasswordHash(n, r, p, salt, key)


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches `encoded`; the comparison takes the same time wherever they differ."""
    stored = parse_password_hash(encoded)
    candidate = _derive(password, stored.salt, stored.n, stored.r, stored.p, len(stored.key))
    return hmac.compare_digest(candidate, stored.key)


def _check_cost(n: int, r: int, p: int) -> None:
    if n < 2 or n & (n - 1) or n > MAX_N:
        raise PasswordHashError(f"scrypt n must be a power of two between 2 and {MAX_N}, got {n}")
    if not 1 <= r <= MAX_R or not 1 <= p <= MAX_P:
        raise PasswordHashError(f"scrypt r must be 1..{MAX_R} and p 1..{MAX_P}, got r={r} p={p}")
