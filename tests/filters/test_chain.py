"""The chain's own behaviour, with filters that answer what they are told: policy (mode, timeout, fail_open)
comes from each filter's section and is applied here, once, for every filter."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from filters.base import Connection, Filter, Mode, Outcome, Result, Stage, Transaction, Verdict
from filters.chain import ChainLink, Decision, FilterChain, verdict_summary
from filters.config import FilterSection

SPAM_MARK = ("X-Spam", "Yes")


@dataclass
class FixedResult(Filter):
    name: str
    result: Result
    stages: frozenset[Stage] = frozenset({Stage.MAIL})
    calls: int = 0

    async def check(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
        self.calls += 1
        return self.result


@dataclass
class Hangs(Filter):
    """Waits on an event that never fires: only the chain's timeout can end the check."""

    name: str = "hang"
    stages: frozenset[Stage] = frozenset({Stage.MAIL})
    never: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: bool = False

    async def check(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
        try:
            await self.never.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return Result.passed("the event fired")


@dataclass
class Raises(Filter):
    name: str = "boom"
    stages: frozenset[Stage] = frozenset({Stage.MAIL})

    async def check(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
        raise RuntimeError("library fault")


def link(
    flt: Filter, *, mode: Mode = Mode.ENFORCE, fail_open: bool = False, timeout: float = 5.0
) -> ChainLink:
    return ChainLink(flt, FilterSection(enabled=True, mode=mode, timeout=timeout, fail_open=fail_open))


def run_links(*links: ChainLink) -> tuple[Decision | None, Transaction]:
    txn = Transaction("Q1", mail_from="a@example.org")

    async def stage() -> Decision | None:
        async with asyncio.timeout(10):  # a chain that does not enforce timeouts fails here, not hangs
            return await FilterChain(links).run(Stage.MAIL, Connection("s1", "192.0.2.1"), txn)

    return asyncio.run(stage()), txn


def run_chain(*filters: FixedResult) -> Transaction:
    return run_links(*(link(f) for f in filters))[1]


def only(txn: Transaction) -> Verdict:
    [verdict] = txn.verdicts
    return verdict


# ---- mode ----------------------------------------------------------------------------------------------


def test_enforce_refuses_with_the_reply_of_the_reason_and_stops_the_stage() -> None:
    after = FixedResult("fqdn", Result.passed())
    decision, txn = run_links(link(FixedResult("spf", Result.failed("spf.fail", "no"))), link(after))
    assert decision is not None and decision.render() == "550 5.7.23 SPF validation failed: no"
    assert (decision.filter, decision.reason) == ("spf", "spf.fail")
    assert [(v.filter, v.action, v.mode) for v in txn.verdicts] == [("spf", "reject", "enforce")]
    assert after.calls == 0


def test_observe_records_the_refusal_it_would_have_made_and_accepts() -> None:
    after = FixedResult("fqdn", Result.passed())
    observed = FixedResult("spf", Result.failed("spf.fail", "no"))
    decision, txn = run_links(link(observed, mode=Mode.OBSERVE), link(after))
    assert decision is None
    assert [(v.filter, v.result, v.action, v.mode) for v in txn.verdicts] == [
        ("spf", "fail", "observe:reject", "observe"),
        ("fqdn", "pass", "accept", "enforce"),
    ]
    assert after.calls == 1


def test_observe_records_a_temporary_refusal_too() -> None:
    decision, txn = run_links(link(FixedResult("spf", Result.temperror("spf.temperror")), mode=Mode.OBSERVE))
    assert decision is None and only(txn).action == "observe:tempfail"


@pytest.mark.parametrize(("mode", "headers"), [(Mode.ENFORCE, [SPAM_MARK]), (Mode.OBSERVE, [])])
def test_mark_headers_change_the_message_only_when_enforced(
    mode: Mode, headers: list[tuple[str, str]]
) -> None:
    marked = Result(Outcome.PASS, "", "add header", {"spam": {"score": 9.0}}, mark_headers=(SPAM_MARK,))
    decision, txn = run_links(link(FixedResult("rspamd", marked), mode=mode))
    assert decision is None
    assert txn.add_headers == headers
    assert txn.facts["rspamd"] == {"spam": {"score": 9.0}}  # the facts are recorded either way


# ---- faults: timeout, exception, fail_open ---------------------------------------------------------------


def test_the_chain_ends_a_hung_check_at_the_sections_timeout_with_a_temporary_refusal() -> None:
    hung = Hangs()
    decision, txn = run_links(link(hung, timeout=0.05))
    assert hung.cancelled
    assert decision is not None and decision.render().startswith("451 4.7.1 ")
    verdict = only(txn)
    assert (verdict.result, verdict.reason, verdict.action, verdict.failed_open) == (
        "temperror",
        "hang.timeout",
        "tempfail",
        False,
    )
    assert verdict.detail == "hang did not answer within 0.05s"


def test_an_exception_is_a_temporary_refusal_never_a_pass() -> None:
    decision, txn = run_links(link(Raises()))
    assert decision is not None and decision.reply.code == 451 and decision.reason == "boom.error"
    assert only(txn).detail == "RuntimeError: library fault"


@pytest.mark.parametrize(("flt", "reason"), [(Hangs(), "hang.timeout"), (Raises(), "boom.error")])
def test_fail_open_accepts_and_flags_a_timeout_or_an_exception(
    caplog: pytest.LogCaptureFixture, flt: Filter, reason: str
) -> None:
    after = FixedResult("fqdn", Result.passed())
    with caplog.at_level(logging.WARNING, logger="postroom.filters"):
        decision, txn = run_links(link(flt, fail_open=True, timeout=0.05), link(after))
    assert decision is None and after.calls == 1
    flagged = txn.verdicts[0]
    assert (flagged.result, flagged.reason, flagged.action, flagged.failed_open) == (
        "temperror",
        reason,
        "accept",
        True,
    )
    assert [r.levelno for r in caplog.records if r.getMessage() == "filter verdict"] == [logging.WARNING]


def test_fail_open_does_not_accept_a_refusal() -> None:
    decision, txn = run_links(link(FixedResult("spf", Result.failed("spf.fail")), fail_open=True))
    assert decision is not None and decision.reply.code == 550 and not only(txn).failed_open


# ---- the record: log lines, summary, facts ------------------------------------------------------------


@pytest.mark.parametrize(
    ("chain_link", "level"),
    [
        (link(FixedResult("pass", Result.passed("ok"))), logging.DEBUG),
        (link(FixedResult("skip", Result.skipped("n/a"))), logging.DEBUG),
        (link(FixedResult("fail", Result.failed("spf.fail", "no"))), logging.INFO),
        (link(FixedResult("observed", Result.failed("spf.fail", "no")), mode=Mode.OBSERVE), logging.INFO),
        (link(FixedResult("down", Result.temperror("rspamd.down", "x"))), logging.INFO),
        (link(FixedResult("open", Result.temperror("rspamd.down", "x")), fail_open=True), logging.WARNING),
    ],
)
def test_a_pass_is_a_debug_line_anything_else_stays_visible(
    caplog: pytest.LogCaptureFixture, chain_link: ChainLink, level: int
) -> None:
    with caplog.at_level(logging.DEBUG, logger="postroom.filters"):
        run_links(chain_link)
    [record] = [r for r in caplog.records if r.getMessage() == "filter verdict"]
    assert (record.levelno, getattr(record, "filter", None), getattr(record, "queue_id", None)) == (
        level,
        chain_link.filter.name,
        "Q1",
    )


def test_passes_log_nothing_at_info(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="postroom.filters"):
        run_chain(FixedResult("a", Result.passed()), FixedResult("b", Result.skipped()))
    assert caplog.records == []


def test_the_summary_lists_every_verdict_in_order() -> None:
    _, txn = run_links(
        link(FixedResult("spf", Result.passed())),
        link(FixedResult("fqdn", Result.skipped())),
        link(FixedResult("dnsbl", Result.failed("dnsbl.listed")), mode=Mode.OBSERVE),
    )
    assert verdict_summary(txn.verdicts) == "mail/spf=pass mail/fqdn=skip mail/dnsbl=fail"


def test_connection_stages_record_on_the_connection_and_each_filter_runs_only_at_its_stages() -> None:
    helo = FixedResult("fqdn", Result.passed(), stages=frozenset({Stage.HELO}))
    mail = FixedResult("spf", Result.passed())
    conn = Connection("s1", "192.0.2.1")
    asyncio.run(FilterChain([link(helo), link(mail)]).run(Stage.HELO, conn, None))
    assert [(v.stage, v.filter) for v in conn.verdicts] == [("helo", "fqdn")]
    assert (helo.calls, mail.calls) == (1, 0)


# ---- lifecycle hooks ----------------------------------------------------------------------------------


@dataclass
class Lifecycle(Filter):
    """Records every hook the chain calls; `broken` makes each hook raise after recording it."""

    name: str
    broken: bool = False
    stages: frozenset[Stage] = frozenset({Stage.MAIL})
    calls: list[str] = field(default_factory=list)

    async def check(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
        return Result.passed()

    def _note(self, hook: str) -> None:
        self.calls.append(hook)
        if self.broken:
            raise RuntimeError(f"{self.name} {hook} failed")

    async def start(self) -> None:
        self._note("start")

    async def aclose(self) -> None:
        self._note("aclose")

    async def session_closed(self, conn: Connection) -> None:
        self._note(f"session_closed {conn.session_id}")

    async def record_refusal(self, conn: Connection, reason: str) -> None:
        self._note(f"record_refusal {reason}")


def test_start_starts_every_filter_in_order_and_a_failure_stops_the_start_up() -> None:
    first, second = Lifecycle("first"), Lifecycle("second")
    asyncio.run(FilterChain([link(first), link(FixedResult("plain", Result.passed())), link(second)]).start())
    assert (first.calls, second.calls) == (["start"], ["start"])
    broken, after = Lifecycle("broken", broken=True), Lifecycle("after")
    with pytest.raises(RuntimeError, match="broken start failed"):
        asyncio.run(FilterChain([link(broken), link(after)]).start())
    assert after.calls == []


def test_every_filter_gets_the_other_hooks_and_a_broken_one_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    broken, healthy = Lifecycle("broken", broken=True), Lifecycle("healthy")
    plain = FixedResult("plain", Result.passed())  # no hooks of its own: the base class's no-ops
    chain = FilterChain([link(broken), link(plain), link(healthy)])
    conn = Connection("s7", "192.0.2.1")

    async def lifetime() -> None:
        await chain.session_closed(conn)
        await chain.record_refusal(conn, "routing")
        await chain.aclose()

    with caplog.at_level(logging.ERROR, logger="postroom.filters"):
        asyncio.run(lifetime())
    expected = ["session_closed s7", "record_refusal routing", "aclose"]
    assert (broken.calls, healthy.calls) == (expected, expected)
    assert [(r.getMessage(), getattr(r, "filter", None)) for r in caplog.records] == [
        ("session_closed failed", "broken"),
        ("record_refusal failed", "broken"),
        ("filter close failed", "broken"),
    ]
