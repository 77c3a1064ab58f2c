"""Checks submission credentials: lockout first, then the scrypt hash in a worker thread.

Verifying a hash costs ~100 ms of CPU, so it never runs on the event loop, and at most one verification per
CPU runs at once (each takes 32 MiB; a burst of bad logins must not exhaust memory). A successful check is
remembered for a few minutes as an HMAC under a per-process random key, so a web application that opens a
session per notification pays the hash once, not every time — the way Dovecot's auth cache works.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from enum import Enum

from outbound.auth_limiter import AuthLimiter
from outbound.config import SubmissionUser
from outbound.passwords import PasswordHash, parse_password_hash, verify_password

log = logging.getLogger("postroom.outbound.auth")

VERIFIED_CACHE_SECONDS = 300.0
VERIFIED_CACHE_SIZE = 1024


class AuthOutcome(Enum):
    OK = "ok"
    INVALID = "invalid"
    LOCKED = "locked"


class Authenticator:
    def __init__(
        self,
        users: Sequence[SubmissionUser],
        limiter: AuthLimiter,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._users = {user.name: user for user in users}
        self._limiter = limiter
        self._clock = clock
        self._verify_slots = asyncio.Semaphore(os.cpu_count() or 1)
        self._cache_key = os.urandom(32)
        self._verified: OrderedDict[bytes, float] = OrderedDict()
        # Unknown names are checked against a hash that matches nothing but costs the same, so response
        # time does not reveal which names exist.
        template = parse_password_hash(users[0].password_hash) if users else None
        n, r, p = (template.n, template.r, template.p) if template else (2**15, 8, 1)
        self._decoy = PasswordHash(n, r, p, os.urandom(16), os.urandom(32)).encode()

    def lockout_remaining(self, client_ip: str) -> float:
        """Seconds this client is still locked out for (0 when it may try)."""
        return self._limiter.locked_for(_ip_key(client_ip))

    async def authenticate(self, client_ip: str, login: bytes, password: bytes) -> tuple[AuthOutcome, str]:
        """Check one AUTH attempt; returns the outcome and the login name (for logs and the session)."""
        name = login.decode("utf-8", errors="replace")
        keys = (_ip_key(client_ip), _user_key(name))
        log_extra = {"user": name, "client_ip": client_ip}
        if any(self._limiter.locked_for(key) for key in keys):
            log.warning("AUTH refused: locked out", extra=log_extra)
            return AuthOutcome.LOCKED, name
        if await self._check(name, password):
            for key in keys:
                self._limiter.record_success(key)
            log.info("AUTH succeeded", extra=log_extra)
            return AuthOutcome.OK, name
        newly_locked = [key for key in keys if self._limiter.record_failure(key)]
        log.warning("AUTH failed", extra={**log_extra, "locked_out": newly_locked})
        return AuthOutcome.INVALID, name

    async def _check(self, name: str, password_bytes: bytes) -> bool:
        user = self._users.get(name)
        try:
            password = password_bytes.decode("utf-8")
        except UnicodeDecodeError:
            return False
        stored = user.password_hash if user else self._decoy
        digest = hmac.new(self._cache_key, f"{name}\0{stored}\0{password}".encode(), hashlib.sha256).digest()
        if user and self._cached(digest):
            return True
        async with self._verify_slots:
            ok = await asyncio.to_thread(verify_password, password, stored)
        if ok and user:
            self._remember(digest)
        return ok and user is not None

    def _cached(self, digest: bytes) -> bool:
        expires = self._verified.get(digest)
        return expires is not None and expires > self._clock()

    def _remember(self, digest: bytes) -> None:
        self._verified[digest] = self._clock() + VERIFIED_CACHE_SECONDS
        self._verified.move_to_end(digest)
        while len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)


def _ip_key(client_ip: str) -> str:
    return f"ip:{client_ip}"


def _user_key(name: str) -> str:
    return f"user:{name}"
