"""scrypt password hashes: format, verification, and refusal of malformed or abusive hashes."""

from __future__ import annotations

import base64
import time

import pytest

from outbound.passwords import (
    DEFAULT_N,
    MAX_N,
    PasswordHashError,
    hash_password,
    parse_password_hash,
    verify_password,
)

FAST = 2**10


def test_hash_is_self_describing_and_verifies_only_the_right_password() -> None:
    encoded = hash_password("s3cret pass", n=FAST)
    scheme, n, r, p, salt, key = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(FAST), "8", "1")
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(key)) == 32
    assert verify_password("s3cret pass", encoded)
    assert not verify_password("s3cret pass ", encoded)
    assert not verify_password("S3cret pass", encoded)
    assert not verify_password("", encoded)


def test_each_hash_has_its_own_salt() -> None:
    first, second = hash_password("same", n=FAST), hash_password("same", n=FAST)
    assert first != second
    assert verify_password("same", first) and verify_password("same", second)


def test_non_ascii_passwords_are_hashed_as_utf8() -> None:
    encoded = hash_password("pässwörd-✓", n=FAST)
    assert verify_password("pässwörd-✓", encoded)
    assert not verify_password("passwort-✓", encoded)


def test_the_default_cost_takes_tens_of_milliseconds() -> None:
    encoded = hash_password("default cost")
    assert parse_password_hash(encoded).n == DEFAULT_N
    started = time.perf_counter()
    assert verify_password("default cost", encoded)
    elapsed = time.perf_counter() - started
    assert 0.01 < elapsed < 5, elapsed  # costly enough to slow guessing, bounded for a login


@pytest.mark.parametrize(
    ("encoded", "message"),
    [
        ("plain-text-password", "expected 'scrypt"),
        ("bcrypt$1$8$1$c2FsdHNhbHQ=$a2V5a2V5a2V5a2V5a2V5a2V5", "expected 'scrypt"),
        ("scrypt$x$8$1$c2FsdHNhbHQ=$a2V5a2V5a2V5a2V5a2V5a2V5", "malformed"),
        ("scrypt$1024$8$1$not base64!$a2V5a2V5a2V5a2V5a2V5a2V5", "malformed"),
        ("scrypt$1000$8$1$c2FsdHNhbHQ=$a2V5a2V5a2V5a2V5a2V5a2V5", "power of two"),
        (f"scrypt${MAX_N * 2}$8$1$c2FsdHNhbHQ=$a2V5a2V5a2V5a2V5a2V5a2V5", "power of two"),
        ("scrypt$1024$64$1$c2FsdHNhbHQ=$a2V5a2V5a2V5a2V5a2V5a2V5", "r must be"),
        ("scrypt$1024$8$1$c2E=$a2V5a2V5a2V5a2V5a2V5a2V5", "too short"),
    ],
)
def test_malformed_or_abusive_hashes_are_refused(encoded: str, message: str) -> None:
    with pytest.raises(PasswordHashError, match=message):
        parse_password_hash(encoded)
    with pytest.raises(PasswordHashError):
        verify_password("anything", encoded)


def test_empty_passwords_are_not_hashed() -> None:
    with pytest.raises(ValueError, match="empty"):
        hash_password("")
