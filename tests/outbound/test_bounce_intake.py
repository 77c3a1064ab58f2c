"""DSN generation (checked with flufl.bounce and the email package) and the inbound bounce processor."""

from __future__ import annotations

import email
import email.policy
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from email.message import Message
from pathlib import Path
from typing import Any

from flufl.bounce import all_failures, scan_message

from outbound.bounce_intake import DSN_SUBMITTER, BounceProcessor, queue_dsn
from outbound.dsn import FailedRecipient, build_dsn, enhanced_status
from outbound.suppression import MemorySuppressionList
from outbound.verp import make_return_path
from postroom.core.spool import INCOMING, Spool

BOUNCE_DOMAIN = "bounces.postroom.test"
SECRET = "test-secret"
ORIGINAL = (
    b"From: Helpdesk <helpdesk@senders.dest.test>\r\nTo: <gone@reject.dest.test>\r\n"
    b"Subject: Your ticket #42\r\nMessage-ID: <t42@senders.dest.test>\r\n\r\nBody that is not returned.\r\n"
)
GONE = FailedRecipient(
    "gone@reject.dest.test",
    "5.1.1",
    "550 5.1.1 <gone@reject.dest.test>: Recipient address rejected: User unknown",
    remote_mta="mx.reject.dest.test",
)


def parse(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=email.policy.compat32)


def parts(message: Message) -> list[Message]:
    payload = message.get_payload()
    assert isinstance(payload, list)
    return [part for part in payload if isinstance(part, Message)]


def dsn_for(*failures: FailedRecipient, to: str = "helpdesk@senders.dest.test") -> bytes:
    return build_dsn(
        reporting_mta="relay.postroom.test",
        recipient=to,
        original_queue_id="0018F2A6B3C4D5E6A",
        original_raw=ORIGINAL,
        arrival=1_700_000_000.0,
        failures=failures,
        now=1_700_000_100.0,
    ).raw


def test_dsn_is_a_multipart_report_that_flufl_bounce_understands() -> None:
    other = FailedRecipient("x@nullmx.dest.test", "5.1.10", "5.1.10 domain accepts no mail", remote=False)
    raw = dsn_for(GONE, other)
    message = parse(raw)
    assert message.get_content_type() == "multipart/report"
    assert message.get_param("report-type") == "delivery-status"
    assert message["Auto-Submitted"] == "auto-replied"
    assert message["To"] == "<helpdesk@senders.dest.test>"
    human, status, headers = parts(message)
    assert human.get_content_type() == "text/plain"
    assert "gone@reject.dest.test" in human.get_payload()
    assert status.get_content_type() == "message/delivery-status"
    per_message, first, second = parts(status)
    assert per_message["Reporting-MTA"] == "dns; relay.postroom.test"
    assert first["Final-Recipient"] == "rfc822; gone@reject.dest.test"
    assert (first["Action"], first["Status"]) == ("failed", "5.1.1")
    assert first["Remote-MTA"] == "dns; mx.reject.dest.test"
    assert first["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert second["Diagnostic-Code"].startswith("x-postroom; ") and second["Remote-MTA"] is None
    assert headers.get_content_type() == "text/rfc822-headers"
    assert "Subject: Your ticket #42" in headers.get_payload()
    assert b"Body that is not returned" not in raw
    assert all(line.endswith(b"\r") or not line for line in raw.split(b"\n")[:-1])  # CRLF throughout
    assert scan_message(message) == {b"gone@reject.dest.test", b"x@nullmx.dest.test"}


def test_enhanced_status_from_the_reply_or_the_code() -> None:
    assert enhanced_status(550, "5.7.1 relay denied") == "5.7.1"
    assert enhanced_status(550, "no such user") == "5.0.0"
    assert enhanced_status(550, "4.2.0 mismatched class") == "5.0.0"
    assert enhanced_status(451, "", default="4.4.7") == "4.4.7"


async def test_queue_dsn_goes_to_the_sender_with_the_null_sender(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "out").create()
    meta = {
        "id": "0018F2A6B3C4D5E6A",
        "mail_from": "helpdesk@Senders.Dest.Test",
        "queued_at": 1_700_000_000.0,
    }
    dsn_id = await queue_dsn(
        spool, original_meta=meta, original_raw=ORIGINAL, failures=[GONE], reporting_mta="relay.test", now=1.0
    )
    assert dsn_id is not None and spool.ids(INCOMING) == [dsn_id]
    entry = spool.read(INCOMING, dsn_id)
    assert entry.meta["mail_from"] == ""
    assert entry.meta["rcpt_to"] == ["helpdesk@Senders.Dest.Test"]
    assert entry.meta["domain"] == "senders.dest.test"
    assert entry.meta["submitted_by"] == DSN_SUBMITTER and entry.meta["dsn_for"] == "0018F2A6B3C4D5E6A"
    assert all_failures(parse(entry.raw))[1] == {b"gone@reject.dest.test"}


async def test_no_dsn_for_a_message_from_the_null_sender(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "out").create()
    meta: dict[str, object] = {"id": "0018F2A6B3C4D5E6A", "mail_from": ""}
    dsn_id = await queue_dsn(
        spool, original_meta=meta, original_raw=ORIGINAL, failures=[GONE], reporting_mta="relay.test", now=1.0
    )
    assert dsn_id is None and spool.ids(INCOMING) == []


async def test_no_dsn_when_an_address_would_inject_a_header(tmp_path: Path) -> None:
    """CVE-2024-6923's class of bug: a value with a line break is refused, never written into a header."""
    spool = Spool(tmp_path / "out").create()
    injected = {"id": "0018F2A6B3C4D5E6A", "mail_from": "a@sender.test\r\nBcc: victim@else.test"}
    dsn_id = await queue_dsn(
        spool,
        original_meta=injected,
        original_raw=ORIGINAL,
        failures=[GONE],
        reporting_mta="relay.test",
        now=1.0,
    )
    assert dsn_id is None and spool.ids(INCOMING) == []
    meta = {"id": "0018F2A6B3C4D5E6A", "mail_from": "a@sender.test"}
    bad_rcpt = FailedRecipient("gone@x.test\nX-Evil: 1", "5.1.1", "550 5.1.1 gone")
    dsn_id = await queue_dsn(
        spool,
        original_meta=meta,
        original_raw=ORIGINAL,
        failures=[bad_rcpt],
        reporting_mta="relay.test",
        now=1.0,
    )
    assert dsn_id is None and spool.ids(INCOMING) == []


def processor(tmp_path: Path) -> tuple[BounceProcessor, MemorySuppressionList]:
    suppression = MemorySuppressionList(tmp_path / "suppression.json")
    return BounceProcessor(bounce_domain=BOUNCE_DOMAIN, secret=SECRET, suppression=suppression), suppression


async def test_verp_bounce_suppresses_the_recipient_the_token_names(tmp_path: Path) -> None:
    bounces, suppression = processor(tmp_path)
    rcpt = make_return_path(
        "0018F2A6B3C4D5E6A", "gone@reject.dest.test", bounce_domain=BOUNCE_DOMAIN, secret=SECRET
    )
    assert bounces.is_bounce_address(rcpt)
    result = await bounces.process(rcpt, dsn_for(GONE, to=rcpt))
    assert result.action == "suppressed"
    assert result.token is not None and result.token.queue_id == "0018F2A6B3C4D5E6A"
    assert result.suppressed == ["gone@reject.dest.test"] and result.permanent == ["gone@reject.dest.test"]
    entry = await suppression.lookup("GONE@reject.dest.test")
    assert entry is not None and entry.source == "bounce" and "0018F2A6B3C4D5E6A" in entry.reason


async def test_forged_verp_address_is_refused_and_suppresses_nothing(tmp_path: Path) -> None:
    bounces, suppression = processor(tmp_path)
    real = make_return_path(
        "0018F2A6B3C4D5E6A", "gone@reject.dest.test", bounce_domain=BOUNCE_DOMAIN, secret=SECRET
    )
    forged = real.replace("gone=reject.dest.test", "ceo=senders.dest.test")
    assert not bounces.is_bounce_address(forged)
    assert not bounces.is_bounce_address(f"bounce@{BOUNCE_DOMAIN}")
    assert not bounces.is_bounce_address("gone@reject.dest.test")
    result = await bounces.process(
        forged, dsn_for(FailedRecipient("ceo@senders.dest.test", "5.1.1", "550 x"))
    )
    assert result.action == "invalid_token" and result.suppressed == []
    assert await suppression.entries() == []


async def test_delay_notices_and_auto_replies_suppress_nothing(tmp_path: Path) -> None:
    bounces, suppression = processor(tmp_path)
    rcpt = make_return_path(
        "0018F2A6B3C4D5E6A", "slow@example.com", bounce_domain=BOUNCE_DOMAIN, secret=SECRET
    )
    delayed = dsn_for(GONE, to=rcpt).replace(b"Action: failed", b"Action: delayed")
    result = await bounces.process(rcpt, delayed)
    assert result.action == "not_permanent" and result.temporary == ["gone@reject.dest.test"]
    vacation = (
        b"From: slow@example.com\r\nSubject: Out of office\r\nAuto-Submitted: auto-replied\r\n\r\n"
        b"Back Monday.\r\n"
    )
    assert (await bounces.process(rcpt, vacation)).action == "not_permanent"
    assert await suppression.entries() == []


async def test_non_standard_bounce_found_by_flufl_heuristics_still_suppresses(tmp_path: Path) -> None:
    bounces, suppression = processor(tmp_path)
    rcpt = make_return_path(
        "0018F2A6B3C4D5E6A", "old@example.com", bounce_domain=BOUNCE_DOMAIN, secret=SECRET
    )
    qmail = (
        b"From: MAILER-DAEMON@example.com\r\nTo: " + rcpt.encode() + b"\r\nSubject: failure notice\r\n\r\n"
        b"Hi. This is the qmail-send program at example.com.\r\n"
        b"I'm afraid I wasn't able to deliver your message to the following addresses.\r\n"
        b"This is a permanent error; I've given up. Sorry it didn't work out.\r\n\r\n"
        b"<old@example.com>:\r\nSorry, no mailbox here by that name. (#5.1.1)\r\n\r\n"
        b"--- Below this line is a copy of the message.\r\n\r\nSubject: hi\r\n\r\nhi\r\n"
    )
    result = await bounces.process(rcpt, qmail)
    assert result.action == "suppressed" and result.permanent == ["old@example.com"]
    assert await suppression.lookup("old@example.com") is not None


class _ThreadRecorder(ThreadPoolExecutor):
    """The executor a BounceProcessor is given; notes the thread each job ran on."""

    def __init__(self) -> None:
        super().__init__(max_workers=1, thread_name_prefix="bounce-parse")
        self.threads: list[int] = []

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        def run() -> Any:
            self.threads.append(threading.get_ident())
            return fn(*args, **kwargs)

        return super().submit(run)


async def test_the_bounce_mime_is_parsed_off_the_event_loop(tmp_path: Path) -> None:
    suppression = MemorySuppressionList(tmp_path / "suppression.json")
    executor = _ThreadRecorder()
    bounces = BounceProcessor(
        bounce_domain=BOUNCE_DOMAIN, secret=SECRET, suppression=suppression, executor=executor
    )
    rcpt = make_return_path(
        "0018F2A6B3C4D5E6A", "gone@reject.dest.test", bounce_domain=BOUNCE_DOMAIN, secret=SECRET
    )
    try:
        result = await bounces.process(rcpt, dsn_for(GONE, to=rcpt))
    finally:
        executor.shutdown()
    assert result.action == "suppressed"
    assert len(executor.threads) == 1 and executor.threads[0] != threading.get_ident()
