"""Checks submission credentials: lockout first, then the scrypt hash in a worker thread.

Lockouts are keyed so that one misbehaving host cannot lock out the real client (Dovecot's auth penalty and
fail2ban work the same way): failures count per client IP and per (client IP, user), each locking out at
`auth_failures_before_lockout`. A user name alone is only locked at the much higher per-user ceiling
(`user_auth_failures_before_lockout`, guessing spread over many hosts), and even then not for a client that
has logged in as that user before (within `TRUSTED_CLIENT_SECONDS`): the application server keeps sending.
A success clears its IP and (IP, user) counts, never the per-user one (a real client's logins must not
reset a distributed guess). Every lockout is logged and reported to `on_lockout` (a metric).

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
# How long a client that logged in as a user stays exempt from that user's per-user lockout.
TRUSTED_CLIENT_SECONDS = 7 * 86400.0
TRUSTED_CLIENTS_SIZE = 4096
# Lockout scopes, as logged and counted.
SCOPE_IP, SCOPE_IP_USER, SCOPE_USER = "ip", "ip_user", "user"


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
        user_limiter: AuthLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_lockout: Callable[[str], None] | None = None,
    ) -> None:
        """`limiter` counts per IP and per (IP, user); `user_limiter`, per user name (the high ceiling)."""
        self._users = {user.name: user for user in users}
        self._limiter = limiter
        self._user_limiter = user_limiter
        self._clock = clock
        self._on_lockout = on_lockout
        self._trusted: OrderedDict[tuple[str, str], float] = OrderedDict()
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
        ip_key, pair_key, user_key = _ip_key(client_ip), _pair_key(client_ip, name), _user_key(name)
        log_extra = {"user": name, "client_ip": client_ip}
        scope = self._locked_scope(client_ip, name)
        if scope is not None:
            log.warning("AUTH refused: locked out", extra={**log_extra, "scope": scope})
            return AuthOutcome.LOCKED, name
        if await self._check(name, password):
            self._limiter.record_success(ip_key)
            self._limiter.record_success(pair_key)
            self._trust(client_ip, name)
            log.info("AUTH succeeded", extra=log_extra)
            return AuthOutcome.OK, name
        newly_locked = [
            scope
            for scope, locked in (
                (SCOPE_IP, self._limiter.record_failure(ip_key)),
                (SCOPE_IP_USER, self._limiter.record_failure(pair_key)),
                (SCOPE_USER, self._user_limiter is not None and self._user_limiter.record_failure(user_key)),
            )
            if locked
        ]
        log.warning("AUTH failed", extra={**log_extra, "locked_out": newly_locked})
        for scope in newly_locked:
            log.warning("AUTH lockout", extra={**log_extra, "event": "auth_lockout", "scope": scope})
            if self._on_lockout is not None:
                self._on_lockout(scope)
        return AuthOutcome.INVALID, name

    def _locked_scope(self, client_ip: str, name: str) -> str | None:
        """Which lockout refuses this attempt, if any."""
        if self._limiter.locked_for(_ip_key(client_ip)):
            return SCOPE_IP
        if self._limiter.locked_for(_pair_key(client_ip, name)):
            return SCOPE_IP_USER
        if self._user_limiter is not None and self._user_limiter.locked_for(_user_key(name)):
            return None if self._trusted_client(client_ip, name) else SCOPE_USER
        return None

    def _trust(self, client_ip: str, name: str) -> None:
        key = (client_ip, name)
        self._trusted[key] = self._clock() + TRUSTED_CLIENT_SECONDS
        self._trusted.move_to_end(key)
        while len(self._trusted) > TRUSTED_CLIENTS_SIZE:
            self._trusted.popitem(last=False)

    def _trusted_client(self, client_ip: str, name: str) -> bool:
        expires = self._trusted.get((client_ip, name))
        return expires is not None and expires > self._clock()

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


def _pair_key(client_ip: str, name: str) -> str:
    return f"ip_user:{client_ip}\0{name}"


def _user_key(name: str) -> str:
    return f"user:{name}"
