from __future__ import annotations

from pathlib import Path

import pytest

from inbound.smtp.routing import Refusal, Route, Router, load_tenant_file
from postroom.core.replies import BAD_ADDRESS, RELAY_DENIED, UNKNOWN_TENANT

router = Router(["helpdesk.example", "mail.other.test"])


def test_plus_address_routes_to_tenant_mailbox_and_hash() -> None:
    route = router.route("support+4711@acme.helpdesk.example")
    assert route == Route("support+4711@acme.helpdesk.example", "acme", "support", "4711")


def test_case_of_domain_and_mailbox_is_normalised() -> None:
    route = router.route("Support@ACME.Helpdesk.Example")
    assert isinstance(route, Route)
    assert (route.tenant, route.mailbox, route.mailbox_hash) == ("acme", "support", None)
    assert route.address == "Support@acme.helpdesk.example"


def test_second_configured_domain_routes_too() -> None:
    route = router.route("help@globex.mail.other.test")
    assert isinstance(route, Route) and route.tenant == "globex"


@pytest.mark.parametrize(
    "address",
    [
        "victim@gmail.com",
        "user@[192.0.2.1]",
        "user@helpdesk.example.evil.com",
        "user@evilhelpdesk.example",
        "user%victim.com@acme.helpdesk.example",
        '"victim@gmail.com"@acme.helpdesk.example',
        '"quoted"@acme.helpdesk.example',
        "victim@gmail.com@acme.helpdesk.example",
        "a..b@acme.helpdesk.example",
        ".lead@acme.helpdesk.example",
        "x" * 65 + "@acme.helpdesk.example",
    ],
)
def test_relay_attempts_are_refused(address: str) -> None:
    refusal = router.route(address)
    assert isinstance(refusal, Refusal)
    assert refusal.reply in (RELAY_DENIED, UNKNOWN_TENANT, BAD_ADDRESS)
    assert refusal.reply.permanent


@pytest.mark.parametrize(
    "address",
    [
        "user@helpdesk.example",
        "user@a.b.helpdesk.example",
        "user@-bad.helpdesk.example",
        "user@bad-.helpdesk.example",
    ],
)
def test_our_domain_without_a_valid_tenant_is_unknown_mailbox(address: str) -> None:
    refusal = router.route(address)
    assert isinstance(refusal, Refusal) and refusal.reply is UNKNOWN_TENANT


def test_foreign_domain_is_relay_denied_with_its_name() -> None:
    refusal = router.route("victim@gmail.com")
    assert isinstance(refusal, Refusal)
    assert refusal.reply.render(refusal.detail).startswith("550 5.7.1 ")
    assert "gmail.com" in refusal.detail


def test_tenant_list_refuses_unknown_tenants(tmp_path: Path) -> None:
    tenant_file = tmp_path / "tenants"
    tenant_file.write_text("# customers\nacme\nGlobex  # trailing comment\n\n")
    listed = Router(["helpdesk.example"], load_tenant_file(tenant_file))
    assert isinstance(listed.route("a@acme.helpdesk.example"), Route)
    assert isinstance(listed.route("a@globex.helpdesk.example"), Route)
    refusal = listed.route("a@initech.helpdesk.example")
    assert isinstance(refusal, Refusal) and refusal.reply is UNKNOWN_TENANT


def test_invalid_tenant_file_names_the_line(tmp_path: Path) -> None:
    tenant_file = tmp_path / "tenants"
    tenant_file.write_text("acme\nbad_name\n")
    with pytest.raises(ValueError, match=r"tenants:2: invalid tenant name"):
        load_tenant_file(tenant_file)
