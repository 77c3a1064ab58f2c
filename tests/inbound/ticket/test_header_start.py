"""Stray blank lines before the header fields: repaired, so the ticket is not left empty."""

from __future__ import annotations

import pytest

from inbound.ticket.header_start import MAX_STRAY_BLANK_LINES, MAX_TRACE_LINES, repaired_header_start
from tests.inbound.ticket.hostile import HEAD, ticket

MESSAGE = HEAD + b"Subject: printer on fire\r\n\r\nIt is still burning.\r\n"
TRACE = b"Received: from client.example.net by mx.helpdesk.example; Mon, 7 Dec 2026 18:00:00 +0000\r\n"


def assert_read_in_full(result: dict[str, object], repair: str) -> None:
    assert result["subject"] == "printer on fire"
    assert result["from"] == {"name": "Alice", "email": "alice@example.com"}
    assert result["stripped_text_reply"] == "It is still burning."
    assert {"field": "headers", "reason": repair} in result["parse_errors"]  # type: ignore[operator]


@pytest.mark.parametrize("blank", [b"\r\n", b"\n", b"\r\n\r\n\r\n"])
def test_blank_lines_before_the_header_section_are_skipped(blank: bytes) -> None:
    assert_read_in_full(ticket(blank + MESSAGE), "blank lines before the header section were skipped")


def test_a_blank_line_between_trace_fields_and_the_header_fields_is_skipped() -> None:
    # What arrives when a client's DATA starts with an empty line: the relay's Received field comes first.
    raw = TRACE + b"Return-Path: <alice@example.com>\r\n\r\n" + MESSAGE
    result = ticket(raw)
    assert_read_in_full(result, "a blank line between the trace fields and the header fields was skipped")
    assert [name for name, _ in result["headers"]][:3] == ["Received", "Return-Path", "From"]
    assert result["raw"]["size"] == len(raw)  # the raw summary is of the bytes as received


def test_a_well_formed_message_is_left_alone() -> None:
    raw = TRACE + MESSAGE
    assert repaired_header_start(raw) == (raw, None)
    assert ticket(raw)["parse_errors"] == []


@pytest.mark.parametrize(
    "raw",
    [
        b"\r\n" * (MAX_STRAY_BLANK_LINES + 1) + MESSAGE,  # a long run of blank lines: no header section
        b"\r\nJust some text, no header fields at all.\r\n",
        TRACE + b"\r\nJust text after the trace fields.\r\n",
        TRACE * (MAX_TRACE_LINES + 1) + b"\r\n" + MESSAGE,  # beyond the bounded look at the start
        b"From: a@example.com\r\n\r\n" + MESSAGE,  # an author's field before the blank line: a real body
    ],
)
def test_what_is_not_a_stray_blank_line_is_left_alone(raw: bytes) -> None:
    assert repaired_header_start(raw) == (raw, None)
