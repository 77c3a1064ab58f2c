"""What `serve` demands of a signing key."""

from __future__ import annotations

import pytest

from postroom.core.configload import ConfigError
from postroom.core.secret_policy import MIN_SECRET_BYTES, check_secret, check_secrets


def test_the_public_default_and_short_keys_are_refused_naming_the_key() -> None:
    for value in ("change-me", "", "x" * (MIN_SECRET_BYTES - 1), "é" * 15):  # 30 bytes in UTF-8
        with pytest.raises(ConfigError) as refused:
            check_secret("webhook.secret", value)
        assert refused.value.key == "webhook.secret" and "openssl rand -hex 32" in str(refused.value)


def test_long_keys_pass() -> None:
    check_secret("webhook.secret", "x" * MIN_SECRET_BYTES)
    check_secret("webhook.secret", "é" * 16)  # 32 bytes
    check_secrets([("webhook.secret", "0123456789abcdef" * 4)])
