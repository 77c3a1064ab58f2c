from __future__ import annotations

import time

import pytest

from inbound.ticket.dsn import MAX_BLOCKS, MAX_RECIPIENTS, address_of, read_delivery_status, status_code

FAILED = "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1\n\n"


def test_reads_each_recipient_block() -> None:
    report = read_delivery_status(
        "Reporting-MTA: dns; mx.example.com\n\n"
        "Original-Recipient: rfc822;sales@acme.example\nFinal-Recipient: rfc822; bob@home.example\n"
        "Action: failed\nStatus: 5.1.1\nDiagnostic-Code: smtp; 550 5.1.1 <bob@home.example>:\n"
        "  Recipient address rejected: User unknown\n\n"
        "Final-Recipient: RFC822; <c@example.org>\r\nAction: delayed\r\n"
        "Diagnostic-Code: smtp; 451 4.2.0 try later\r\n"
    )
    first, second = report.recipients
    assert (first.email, first.action, first.status) == ("sales@acme.example", "failed", "5.1.1")
    assert first.diagnostic.endswith("Recipient address rejected: User unknown")  # folded line joined
    assert (second.email, second.action, second.status) == ("c@example.org", "delayed", "4.2.0")
    assert report.blocks_read == 3


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("rfc822; a@example.org", "a@example.org"),
        ("rfc822;<a@example.org>", "a@example.org"),
        ("a@example.org", "a@example.org"),
        ("x400; /C=us/", None),
        ("rfc822;", None),
    ],
)
def test_address_of(value: str, expected: str | None) -> None:
    assert address_of(value) == expected


def test_nonstandard_actions_are_read() -> None:
    report = read_delivery_status(
        "Reporting-MTA: dns;x\n \nFinal-Recipient: rfc822;u@example.be\nAction: failure\n"
        "Status: 553 Exceeded maximum inbound message size\n\n"
        "Final-Recipient: rfc822;v@example.be\nAction: delay\n"
    )
    assert [(r.email, r.action, r.status) for r in report.recipients] == [
        ("u@example.be", "failed", None),
        ("v@example.be", "delayed", None),
    ]


def test_status_code() -> None:
    assert status_code("smtp; 550 5.1.10 RESOLVER.ADR.RecipientNotFound") == "5.1.10"
    assert status_code("550 no code here") is None


def test_recipients_read_are_capped() -> None:
    report = read_delivery_status("Reporting-MTA: dns; x\n\n" + FAILED * 1_000_000)  # ~50 MB of blocks
    assert len(report.recipients) == MAX_RECIPIENTS
    assert report.blocks_read == MAX_RECIPIENTS + 1


def test_blocks_read_are_capped() -> None:
    report = read_delivery_status("X-Note: y\n\n" * 1_000_000)
    assert report.recipients == []
    assert report.blocks_read == MAX_BLOCKS


def test_ten_megabytes_of_blank_line_separated_blocks_cost_little() -> None:
    hostile = ["\n" * 10_000_000, "X: y\n\n" * 1_700_000, FAILED * 200_000]
    started = time.process_time()
    for body in hostile:
        read_delivery_status(body)
    assert time.process_time() - started < 1.0  # measured ~0.03 s for all three; generous on a busy machine


@pytest.mark.parametrize(
    ("status", "diagnostic", "expected"),
    [
        ("5.0.0", "smtp; 550 5.1.1 <a@example.org>... User Unknown", "5.1.1"),  # Courier
        ("5.0.0 (permanent failure)", "smtp; 5.1.0 - Unknown 550-'5.2.2 <a@x>... Full'", "5.2.2"),
        ("5.0.0", "smtp; 451 4.2.0 try later", "5.0.0"),  # another class: the Status stands
        ("5.1.1", "smtp; 550 5.2.2 mailbox full", "5.1.1"),  # a precise Status stands
        ("5.0.0", "smtp; mailbox unavailable", "5.0.0"),
    ],
)
def test_catch_all_status_gives_way_to_the_servers_reply(status: str, diagnostic: str, expected: str) -> None:
    block = f"Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: {status}\n"
    report = read_delivery_status(f"{block}Diagnostic-Code: {diagnostic}\n")
    assert report.recipients[0].status == expected
