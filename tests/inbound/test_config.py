"""Inbound's config sections: validated at load, errors naming the key."""

from __future__ import annotations

import pytest

from inbound.config import WebhookConfig
from postroom.core.configload import ConfigError, load_dataclass


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://", "missing host"),
        ("https://helpdesk.example:99999/tickets", "invalid port"),
        ("mailto:tickets@helpdesk.example", "must be an http:// or https:// URL"),
    ],
)
def test_a_bad_webhook_url_is_refused_at_load_naming_the_key(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_dataclass(WebhookConfig, {"url": url}, "webhook")
    assert str(refused.value).startswith(f"webhook.url: {problem}")


def test_a_good_webhook_url_loads() -> None:
    url = "https://helpdesk.example:8443/tickets?source=mail"
    assert load_dataclass(WebhookConfig, {"url": url}, "webhook").url == url
