from __future__ import annotations

import pytest

from outbound.verp import VerpToken, make_return_path, parse_return_path

DOMAIN = "bounces.postroom.test"
SECRET = "s3cret"
QUEUE_ID = "0018F2A6B3C4D5E6ABC12"[:19]


def test_round_trip_names_queue_id_and_recipient() -> None:
    address = make_return_path(QUEUE_ID, "Alice.Smith@Example.COM", bounce_domain=DOMAIN, secret=SECRET)
    local, _, domain = address.partition("@")
    assert domain == DOMAIN
    assert local.startswith("bounce+") and local.endswith("-alice.smith=example.com")
    assert len(local) == 41 + len("alice.smith=example.com") == 64  # just fits RFC 5321's limit
    token = parse_return_path(address, bounce_domain=DOMAIN, secret=SECRET)
    assert token == VerpToken(QUEUE_ID, "alice.smith@example.com")


def test_case_changes_by_remote_mtas_do_not_matter() -> None:
    address = make_return_path(QUEUE_ID, "bob@example.com", bounce_domain=DOMAIN, secret=SECRET)
    assert parse_return_path(f"<{address.upper()}>", bounce_domain=DOMAIN, secret=SECRET) == VerpToken(
        QUEUE_ID, "bob@example.com"
    )


@pytest.mark.parametrize("rcpt", ['"john doe"@example.com', "jürgen@exämple.de", "a-b=c@x.example"])
def test_unusual_recipients_round_trip(rcpt: str) -> None:
    address = make_return_path(QUEUE_ID, rcpt, bounce_domain=DOMAIN, secret=SECRET)
    assert address.isascii() and " " not in address and '"' not in address
    assert parse_return_path(address, bounce_domain=DOMAIN, secret=SECRET) == VerpToken(
        QUEUE_ID, rcpt.lower()
    )


def test_forged_or_altered_tokens_are_refused() -> None:
    address = make_return_path(QUEUE_ID, "victim@example.com", bounce_domain=DOMAIN, secret=SECRET)
    local = address.partition("@")[0]
    other_rcpt = local.replace("victim=example.com", "ceo=example.com") + "@" + DOMAIN
    other_queue = local.replace(QUEUE_ID.lower(), "0" * 19) + "@" + DOMAIN
    guessed_mac = "bounce+aaaaaaaaaaaaaaaa-" + local.split("-", 2)[2] + "@" + DOMAIN
    guessed_mac = guessed_mac.replace("-victim", f"-{QUEUE_ID.lower()}-victim")
    for forged in (other_rcpt, other_queue, guessed_mac):
        assert parse_return_path(forged, bounce_domain=DOMAIN, secret=SECRET) is None
    assert parse_return_path(address, bounce_domain=DOMAIN, secret="another secret") is None
    assert parse_return_path(address, bounce_domain="elsewhere.test", secret=SECRET) is None


@pytest.mark.parametrize(
    "address",
    ["", "bounce@" + DOMAIN, "bounce+@" + DOMAIN, "bounce+a-b@" + DOMAIN, "someone@" + DOMAIN, "no-at-sign"],
)
def test_malformed_addresses_are_not_tokens(address: str) -> None:
    assert parse_return_path(address, bounce_domain=DOMAIN, secret=SECRET) is None


def test_queue_id_must_be_a_queue_id() -> None:
    with pytest.raises(ValueError):
        make_return_path("../etc", "a@b.example", bounce_domain=DOMAIN, secret=SECRET)
