"""Failed-AUTH counting and lockout, and the credential check behind the submission listener."""

from __future__ import annotations

import asyncio
import time

from outbound.auth_limiter import AuthLimiter
from outbound.authenticator import VERIFIED_CACHE_SECONDS, Authenticator, AuthOutcome
from outbound.config import SubmissionUser
from outbound.passwords import hash_password
from tests.outbound.submission_fixtures import FakeClock


def test_a_key_locks_after_the_limit_and_unlocks_after_the_lockout() -> None:
    clock = FakeClock()
    limiter = AuthLimiter(max_failures=3, lockout_seconds=100, clock=clock)
    assert [limiter.record_failure("ip:a") for _ in range(3)] == [False, False, True]
    assert limiter.locked_for("ip:a") == 100
    assert limiter.locked_for("ip:b") == 0
    clock.advance(99.5)
    assert limiter.locked_for("ip:a") == 0.5
    clock.advance(0.5)
    assert limiter.locked_for("ip:a") == 0
    assert limiter.record_failure("ip:a") is False  # the count started again


def test_a_success_clears_the_failures() -> None:
    limiter = AuthLimiter(max_failures=2, lockout_seconds=100, clock=FakeClock())
    limiter.record_failure("user:x")
    limiter.record_success("user:x")
    assert limiter.record_failure("user:x") is False


def test_tracked_keys_are_bounded_and_locked_keys_outlive_stale_ones() -> None:
    clock = FakeClock()
    limiter = AuthLimiter(max_failures=2, lockout_seconds=100, clock=clock, max_keys=10)
    limiter.record_failure("user:locked")
    limiter.record_failure("user:locked")
    clock.advance(1)
    for i in range(50):
        limiter.record_failure(f"user:made-up-{i}")
        assert limiter.locked_for("user:locked") == 99  # a flood of new names does not unlock it
    assert len(limiter) <= 10


def make_authenticator(clock: FakeClock) -> Authenticator:
    users = [SubmissionUser("helpdesk", hash_password("right"), ["mail-out.test"])]  # the default cost
    return Authenticator(users, AuthLimiter(max_failures=5, lockout_seconds=900, clock=clock), clock=clock)


async def timed(auth: Authenticator, user: str, password: str) -> tuple[AuthOutcome, float]:
    started = time.perf_counter()
    outcome, _ = await auth.authenticate("127.0.0.1", user.encode(), password.encode())
    return outcome, time.perf_counter() - started


def test_unknown_users_cost_a_full_hash_and_successes_are_remembered_for_a_while() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        auth = make_authenticator(clock)
        outcome, unknown = await timed(auth, "nobody", "right")
        assert outcome is AuthOutcome.INVALID and unknown > 0.02  # no fast path revealing unknown names
        outcome, first = await timed(auth, "helpdesk", "right")
        assert outcome is AuthOutcome.OK and first > 0.02
        outcome, cached = await timed(auth, "helpdesk", "right")
        assert outcome is AuthOutcome.OK and cached < first / 4
        assert (await timed(auth, "helpdesk", "wrong"))[
            0
        ] is AuthOutcome.INVALID  # the cache holds successes only
        clock.advance(VERIFIED_CACHE_SECONDS + 1)
        outcome, expired = await timed(auth, "helpdesk", "right")
        assert outcome is AuthOutcome.OK and expired > 0.02

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_invalid_utf8_passwords_fail_and_count() -> None:
    async def scenario() -> None:
        clock = FakeClock()
        auth = make_authenticator(clock)
        for _ in range(5):
            outcome, _ = await auth.authenticate("127.0.0.9", b"helpdesk", b"\xff\xfe")
            assert outcome is AuthOutcome.INVALID
        assert auth.lockout_remaining("127.0.0.9") == 900
        assert (await auth.authenticate("127.0.0.9", b"helpdesk", b"right"))[0] is AuthOutcome.LOCKED

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def make_keyed_authenticator(
    clock: FakeClock, lockouts: list[str], *, user_ceiling: int = 12
) -> Authenticator:
    users = [SubmissionUser("helpdesk", hash_password("right", n=2**4), ["mail-out.test"])]
    return Authenticator(
        users,
        AuthLimiter(max_failures=5, lockout_seconds=900, clock=clock),
        user_limiter=AuthLimiter(max_failures=user_ceiling, lockout_seconds=900, clock=clock),
        clock=clock,
        on_lockout=lockouts.append,
    )


def test_another_hosts_failures_do_not_lock_out_the_real_client() -> None:
    async def scenario() -> None:
        lockouts: list[str] = []
        auth = make_keyed_authenticator(FakeClock(), lockouts)
        for _ in range(5):
            assert (await auth.authenticate("127.0.0.66", b"helpdesk", b"guess"))[0] is AuthOutcome.INVALID
        assert lockouts == ["ip", "ip_user"]
        assert (await auth.authenticate("127.0.0.66", b"helpdesk", b"right"))[0] is AuthOutcome.LOCKED
        assert (await auth.authenticate("127.0.0.10", b"helpdesk", b"right"))[0] is AuthOutcome.OK

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_one_user_failing_from_a_shared_address_is_locked_per_ip_and_user() -> None:
    async def scenario() -> None:
        lockouts: list[str] = []
        auth = make_keyed_authenticator(FakeClock(), lockouts)
        for _ in range(5):  # the successes of another user on the same address keep clearing the IP count
            assert (await auth.authenticate("127.0.0.5", b"helpdesk", b"right"))[0] is AuthOutcome.OK
            assert (await auth.authenticate("127.0.0.5", b"intruder", b"x"))[0] is AuthOutcome.INVALID
        assert lockouts == ["ip_user"]
        assert (await auth.authenticate("127.0.0.5", b"intruder", b"x"))[0] is AuthOutcome.LOCKED
        assert (await auth.authenticate("127.0.0.5", b"helpdesk", b"right"))[0] is AuthOutcome.OK

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_distributed_guessing_meets_the_per_user_ceiling_but_known_clients_keep_sending() -> None:
    async def scenario() -> None:
        lockouts: list[str] = []
        clock = FakeClock()
        auth = make_keyed_authenticator(clock, lockouts, user_ceiling=12)
        assert (await auth.authenticate("127.0.0.10", b"helpdesk", b"right"))[0] is AuthOutcome.OK
        for host in range(6):  # two guesses from each of six hosts: none reaches its own limit of five
            for _ in range(2):
                await auth.authenticate(f"127.0.1.{host}", b"helpdesk", b"guess")
        assert lockouts == ["user"]
        outcome, _ = await auth.authenticate("127.0.2.1", b"helpdesk", b"right")
        assert outcome is AuthOutcome.LOCKED  # a client never seen: refused until the lockout ends
        assert (await auth.authenticate("127.0.0.10", b"helpdesk", b"right"))[0] is AuthOutcome.OK
        clock.advance(901)
        assert (await auth.authenticate("127.0.2.1", b"helpdesk", b"right"))[0] is AuthOutcome.OK

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))
