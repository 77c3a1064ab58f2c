from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import pytest

from filters.base import Connection, Mode, Result, Stage, Transaction
from filters.chain import FilterChain, verdict_summary


@dataclass
class FixedResult:
    """A filter that answers what it is told: the chain's own behaviour is what is under test."""

    name: str
    result: Result
    mode: Mode = Mode.ENFORCE
    fail_open: bool = False
    timeout: float = 1.0
    stages: frozenset[Stage] = frozenset({Stage.MAIL})

    async def check(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
        return self.result


def run_chain(*filters: FixedResult) -> Transaction:
    txn = Transaction("Q1", mail_from="a@example.org")
    asyncio.run(FilterChain(list(filters)).run(Stage.MAIL, Connection("s1", "192.0.2.1"), txn))
    return txn


@pytest.mark.parametrize(
    ("flt", "level"),
    [
        (FixedResult("pass", Result.passed("ok")), logging.DEBUG),
        (FixedResult("skip", Result.skipped("n/a")), logging.DEBUG),
        (FixedResult("fail", Result.failed("spf.fail", "no")), logging.INFO),
        (FixedResult("observed", Result.failed("spf.fail", "no"), mode=Mode.OBSERVE), logging.INFO),
        (FixedResult("down", Result.temperror("rspamd.down", "x")), logging.INFO),
        (FixedResult("open", Result.temperror("rspamd.down", "x"), fail_open=True), logging.WARNING),
    ],
)
def test_a_pass_is_a_debug_line_anything_else_stays_visible(
    caplog: pytest.LogCaptureFixture, flt: FixedResult, level: int
) -> None:
    with caplog.at_level(logging.DEBUG, logger="postroom.filters"):
        run_chain(flt)
    [record] = [r for r in caplog.records if r.getMessage() == "filter verdict"]
    assert (record.levelno, getattr(record, "filter", None), getattr(record, "queue_id", None)) == (
        level,
        flt.name,
        "Q1",
    )


def test_passes_log_nothing_at_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="postroom.filters"):
        run_chain(FixedResult("a", Result.passed()), FixedResult("b", Result.skipped()))
    assert caplog.records == []


def test_the_summary_lists_every_verdict_in_order() -> None:
    txn = run_chain(
        FixedResult("spf", Result.passed()),
        FixedResult("fqdn", Result.skipped()),
        FixedResult("dnsbl", Result.failed("dnsbl.listed"), mode=Mode.OBSERVE),
    )
    assert verdict_summary(txn.verdicts) == "mail/spf=pass mail/fqdn=skip mail/dnsbl=fail"
