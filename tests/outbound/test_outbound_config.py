"""Validation of [submission], [outbound] and [dkim]: every bad value is refused with its dotted key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from outbound.config import DestinationConfig
from postroom.app.config import config_from_mapping
from postroom.core.configload import ConfigError
from tests.outbound.submission_fixtures import DKIM_KEY, TlsFiles


def user(**overrides: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": "helpdesk",
        "password_hash": "scrypt$1024$8$1$c2FsdHNhbHQ=$a2V5a2V5a2V5a2V5a2V5a2V5",
        "sender_domains": ["mail-out.test"],
    }
    return entry | overrides


def test_defaults_load_and_describe_a_disabled_relay() -> None:
    cfg = config_from_mapping({})
    assert not cfg.submission.enabled and not cfg.outbound.enabled
    assert cfg.submission.listen == "127.0.0.1:587"
    assert cfg.submission.allowed_networks == ["127.0.0.0/8", "::1/128"]
    assert (cfg.submission.auth_failures_before_lockout, cfg.submission.lockout_seconds) == (5, 900.0)
    assert cfg.outbound.retry_max_age == 5 * 86400
    assert cfg.outbound.spool_dir(cfg.spool.path) == Path(cfg.spool.path) / "outbound"
    assert "From" in cfg.dkim.headers


def test_an_enabled_submission_section_with_users(tls_files: TlsFiles) -> None:
    section = {
        "enabled": True,
        "tls_cert": str(tls_files.cert),
        "tls_key": str(tls_files.key),
        "users": [user()],
    }
    cfg = config_from_mapping({"submission": section, "outbound": {"spool_path": "/srv/out"}})
    assert cfg.submission.users[0].sender_domains == ["mail-out.test"]
    assert cfg.outbound.spool_dir("/ignored") == Path("/srv/out")


@pytest.mark.parametrize(
    ("section", "values", "key", "message"),
    [
        ("submission", {"enabled": True, "users": [user()]}, "tls_cert", "required"),
        ("submission", {"enabled": True, "tls_cert": "/no", "tls_key": "/no"}, "tls_cert", "no such"),
        ("submission", {"listen": "587"}, "listen", "host:port"),
        ("submission", {"allowed_networks": ["10.0.0.1/8"]}, "allowed_networks[0]", "host bits"),
        ("submission", {"lockout_seconds": 0}, "lockout_seconds", "positive"),
        ("submission", {"users": [user(password_hash="hunter2")]}, "users[0].password_hash", "hash-password"),
        ("submission", {"users": [user(sender_domains=[])]}, "users[0].sender_domains", "at least"),
        ("submission", {"users": [user(sender_domains=["Mail.Test"])]}, "sender_domains[0]", "lowercase"),
        ("submission", {"users": [user(), user()]}, "users[1].name", "duplicate"),
        ("submission", {"users": [{"name": "x"}]}, "users[0].password_hash", "required key"),
        ("outbound", {"enabled": True}, "bounce_domain", "required when verp"),
        ("outbound", {"bounce_domain": "bounces.example.com"}, "verp_secret", "required when bounce_domain"),
        ("outbound", {"bounce_domain": "b.example.com", "verp_secret": "short"}, "verp_secret", "too short"),
        ("outbound", {"concurrency": 0}, "concurrency", "at least 1"),
        ("outbound", {"smtp_port": 70000}, "smtp_port", "TCP port"),
        ("outbound", {"smarthost": "relay.example:x"}, "smarthost", "invalid port"),
        ("outbound", {"retry_initial": 600, "retry_max_interval": 60}, "retry_max_interval", "at least"),
        (
            "outbound",
            {"destinations": {"gmail.com": {"concurrency": 0}}},
            "gmail.com.concurrency",
            "at least",
        ),
        (
            "outbound",
            {"destinations": {"gmail.com": {"concurrency": 500}}},
            "gmail.com.concurrency",
            "global",
        ),
        ("outbound", {"destinations": {"Gmail.com": {}}}, "destinations.Gmail.com", "lowercase"),
        ("dkim", {"keys": {"mail-out.test": "/no/such.pem"}}, "keys.mail-out.test", "no such key file"),
        ("dkim", {"headers": ["Subject"]}, "headers", "must include From"),
        ("dkim", {"headers": ["From", "Received"]}, "headers[1]", "must not be signed"),
        ("dkim", {"selector": "bad selector"}, "selector", "DNS label"),
    ],
)
def test_bad_values_name_their_key(section: str, values: dict[str, Any], key: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        config_from_mapping({section: values})
    assert refused.value.key.startswith(section) and refused.value.key.endswith(key)


def test_destination_overrides_inherit_unset_limits() -> None:
    cfg = config_from_mapping(
        {
            "outbound": {
                "destination_concurrency": 20,
                "destination_rate_per_minute": 600,
                "destinations": {
                    "gmail.com": {"concurrency": 5, "rate_per_minute": 100, "require_tls": True}
                },
            },
            "dkim": {"keys": {"mail-out.test": str(DKIM_KEY)}},
        }
    )
    assert cfg.outbound.limits_for("Gmail.COM.") == DestinationConfig(5, 100, True)
    assert cfg.outbound.limits_for("example.org") == DestinationConfig(20, 600, False)
