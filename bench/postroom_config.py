"""Postroom's config for each benchmark profile (keys as in inbound/config.py and filters/config.py).

Profiles:
- none:  every filter off — the pipeline itself (SMTP, spool, normalise, sign, POST);
- cheap: DNSBL, SPF, FQDN/HELO checks and throttling, answered by a local NSD;
- all:   cheap plus Rspamd, clamd and DKIM/DMARC verification against the real daemons.
Throttle limits are raised far above the offered load: the checks run and cost what they cost, but refusing
the benchmark's own clients would measure the limit, not the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PROFILES = ("none", "cheap", "all")
MAIL_DOMAIN = "helpdesk.test"
DNSBL_ZONE = "dnsbl.test"  # in fixtures/dns/zones; see bench/services.py
UNLIMITED = 1_000_000


@dataclass
class Services:
    """Where the profile's daemons listen; empty until the driver starts them."""

    nameserver: str = ""  # "127.0.0.1:PORT"
    rspamd_url: str = ""
    clamd_address: str = ""  # "127.0.0.1:PORT"
    clamd_stream_max_length: int = 0  # clamd's StreamMaxLength, which the filter must know
    daemon_pids: list[int] = field(default_factory=list)  # Rspamd's and clamd's main processes


def filters_for(profile: str, services: Services) -> dict[str, dict[str, object]]:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    on = profile in ("cheap", "all")
    sections: dict[str, dict[str, object]] = {
        "dnsbl": {"enabled": on, "zones": [DNSBL_ZONE]},
        "spf": {"enabled": on},
        "fqdn": {"enabled": on},
        "throttle": {
            "enabled": on,
            "ip_concurrency": 1000,
            "ip_connections_per_minute": UNLIMITED,
            "ip_messages_per_minute": UNLIMITED,
            "ip_recipients_per_minute": UNLIMITED,
            "sender_messages_per_minute": UNLIMITED,
            "tenant_messages_per_minute": UNLIMITED,
        },
        "rspamd": {"enabled": profile == "all"},
        "clamav": {"enabled": profile == "all"},
        "dkim": {"enabled": profile == "all"},
    }
    if profile == "all":
        sections["rspamd"]["url"] = services.rspamd_url
        sections["clamav"]["address"] = services.clamd_address
        sections["clamav"]["stream_max_length"] = services.clamd_stream_max_length
    return sections


FILTER_NAMES = tuple(filters_for("all", Services()))


def render_config(
    profile: str,
    *,
    listen: str,
    spool: Path,
    webhook_url: str,
    secret: str,
    services: Services,
    without: tuple[str, ...] = (),
    overrides: dict[str, dict[str, object]] | None = None,
) -> str:
    """The TOML text; `without` switches named filters off, to see what one filter costs; `overrides`
    adds or replaces keys of top-level sections."""
    config: dict[str, dict[str, object]] = {
        "smtp": {
            "listen": listen,
            "hostname": "mx.bench.test",
            "max_sessions": 1000,
            "max_sessions_per_ip": 200,
        },
        "routing": {"domains": [MAIL_DOMAIN]},
        "spool": {"path": str(spool)},
        # Short retry intervals so the spool scenario starts draining within seconds of the receiver's return.
        "webhook": {"url": webhook_url, "secret": secret, "retry_initial": 1.0, "retry_max_interval": 3.0},
        "logging": {"level": "info", "format": "json"},
    }
    if services.nameserver:
        config["dns"] = {"nameservers": [services.nameserver], "timeout": 2.0}
    for section, keys in (overrides or {}).items():
        config[section] = {**config.get(section, {}), **keys}
    lines: list[str] = []
    for name, table in config.items():
        lines += [f"[{name}]", *_pairs(table), ""]
    for name, table in filters_for(profile, services).items():
        if name in without:
            table["enabled"] = False
        lines += [f"[filters.{name}]", *_pairs(table), ""]
    return "\n".join(lines)


def _pairs(table: dict[str, object]) -> list[str]:
    return [f"{key} = {_value(value)}" for key, value in table.items()]


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"cannot render {value!r} as TOML")
