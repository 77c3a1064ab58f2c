"""`[filters.*]` validation at load: a bad value is a one-line error naming its key, never a late failure."""

from __future__ import annotations

import pytest

from filters.config import FiltersConfig
from postroom.core.configload import ConfigError, load_dataclass


def load_rspamd_url(url: str) -> str:
    return load_dataclass(FiltersConfig, {"rspamd": {"enabled": True, "url": url}}, "filters").rspamd.url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://", "missing host"),
        ("https://", "missing host"),
        ("http://:11333", "missing host"),
        ("https://h:99999/x", "invalid port"),
        ("http://127.0.0.1:0", "invalid port"),
        ("http://127.0.0.1:port", "invalid port"),
        ("http://[::1:11333", "invalid URL"),
        ("ftp://127.0.0.1", "must be an http:// or https:// URL"),
        ("127.0.0.1:11333", "must be an http:// or https:// URL"),
        ("http://127.0.0.1 :11333", "must not contain spaces or control characters"),
    ],
)
def test_a_bad_rspamd_url_is_refused_at_load_naming_the_key(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_rspamd_url(url)
    assert refused.value.key == "filters.rspamd.url"
    assert str(refused.value).startswith(f"filters.rspamd.url: {problem}")


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:11333", "https://rspamd.internal/", "http://[::1]:11333/proxy", "HTTP://H:65535"],
)
def test_good_rspamd_urls_load(url: str) -> None:
    assert load_rspamd_url(url) == url
