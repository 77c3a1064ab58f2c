"""What `postroom serve` demands of the keys it signs with.

A signing key (HMAC) that an attacker can guess lets them forge what it signs: a webhook signature makes a
forged ticket, a VERP return path a forged bounce that suppresses a real recipient. So `serve` refuses the
public default and any key shorter than 32 bytes (RFC 2104: an HMAC key should be no shorter than the hash
output, 32 bytes for SHA-256). Passwords of third-party services (the Rspamd controller,
Redis) are not ours to size: they are not checked here.
"""

from __future__ import annotations

from collections.abc import Iterable

from postroom.core.configload import ConfigError

MIN_SECRET_BYTES = 32
# Values shipped in Postroom's own defaults and examples: public, so never a key.
PUBLIC_DEFAULTS = frozenset({"change-me"})
HOW_TO_MAKE_ONE = "set at least 32 random bytes, e.g. the output of `openssl rand -hex 32`"


def check_secret(key: str, value: str) -> None:
    """Raise ConfigError naming `key` when `value` is not fit to sign with."""
    if value in PUBLIC_DEFAULTS:
        raise ConfigError(key, f"is the public default {value!r}; {HOW_TO_MAKE_ONE}")
    size = len(value.encode("utf-8"))
    if size < MIN_SECRET_BYTES:
        raise ConfigError(key, f"is {size} bytes, shorter than {MIN_SECRET_BYTES}; {HOW_TO_MAKE_ONE}")


def check_secrets(secrets: Iterable[tuple[str, str]]) -> None:
    """Check (dotted key, value) pairs; the first unfit one raises."""
    for key, value in secrets:
        check_secret(key, value)
