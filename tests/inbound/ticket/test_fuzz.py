"""Fuzzing the normaliser (issue 13): for mutated fixtures and generated MIME trees, a ticket is always
produced, valid against the schema, serialisable, at most K x input + C bytes, and quick.

A small example budget runs in the suite; POSTROOM_FUZZ_EXAMPLES=5000 runs a longer search. What a search
finds is kept in fixtures/mail/fuzz/ and replayed here on every run.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from inbound.ticket.payload import build_ticket, ticket_json, validate_ticket
from tests.inbound.ticket.corpus import FIXTURES, context
from tests.inbound.ticket.fuzz_strategies import generated_message, mutated_fixture

EXAMPLES = int(os.environ.get("POSTROOM_FUZZ_EXAMPLES", "100"))
K, C = 12, 16 * 1024
CPU_SECONDS_PER_MESSAGE = 2.0  # inputs here are small: anything near this is a regression
FOUND = sorted((FIXTURES / "fuzz").glob("*.eml"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # timed below, in CPU seconds: wall time on a shared machine says little
    database=None,  # nothing written into the checkout; findings are kept as fixtures by hand
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def check_ticket(raw: bytes) -> None:
    started = time.process_time()
    ticket = build_ticket(raw, context(mail_from=""))
    body = ticket_json(ticket)
    cpu = time.process_time() - started
    validate_ticket(ticket)
    assert len(body) <= K * len(raw) + C
    assert cpu < CPU_SECONDS_PER_MESSAGE
    assert not (ticket["parse_error"] or "").startswith("normaliser failed"), ticket["parse_error"]


@FUZZ
@given(mutated_fixture())
def test_mutated_fixtures_always_give_a_valid_bounded_ticket(raw: bytes) -> None:
    check_ticket(raw)


@FUZZ
@given(generated_message())
def test_generated_mime_trees_always_give_a_valid_bounded_ticket(raw: bytes) -> None:
    check_ticket(raw)


@pytest.mark.parametrize("path", FOUND, ids=[path.stem for path in FOUND])
def test_what_fuzzing_found_stays_fixed(path: Path) -> None:
    check_ticket(path.read_bytes())
