"""The delivery runner end to end: real DNS (NSD), real receiving MXs on 127.0.0.2x, a real spool."""

from __future__ import annotations

import email
import email.policy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flufl.bounce import all_failures

from filters.resolver import make_resolver
from outbound.bounce_intake import BounceProcessor
from outbound.dsn import FailedRecipient, build_dsn
from outbound.runner import OutboundRunner
from outbound.scheduler import DeliveryScheduler
from outbound.suppression import MemorySuppressionList, open_suppression
from outbound.verp import parse_return_path
from postroom.app.config import Config
from postroom.core.spool import ACTIVE, CORRUPT, DEFERRED, INCOMING, Spool
from tests.outbound.delivery_fixtures import (
    MX_A_ONLY,
    MX_GREYLIST,
    MX_MULTI_1,
    MX_REJECT,
    MX_SENDERS,
    MX_WIDE,
    SENDER,
    VERP_SECRET,
    MxFarm,
    Received,
    VirtualTime,
    delivery_config,
    outbound_entry,
    outbound_spool,
    wait_for,
)
from tests.servers.dns import DnsServer

BOUNCE_DOMAIN = "bounces.postroom.test"


@dataclass
class Relay:
    cfg: Config
    spool: Spool
    suppression: MemorySuppressionList
    runner: OutboundRunner

    def queue(self, rcpts: list[str], *, seq: int | str = 1, sender: str = SENDER) -> str:
        (queue_id,) = self.spool.store([outbound_entry(rcpts, seq=seq, sender=sender)])
        self.runner.wake()
        return queue_id

    def pending(self) -> int:
        return sum(len(self.spool.ids(state)) for state in (INCOMING, ACTIVE, DEFERRED))

    async def drained(self, timeout: float = 20.0) -> None:
        await wait_for(lambda: self.pending() == 0 and self.runner.idle, timeout)


RelayFactory = Callable[..., Awaitable[Relay]]


@pytest.fixture
async def relay(tmp_path: Path, dns_server: DnsServer, mx_farm: MxFarm) -> AsyncIterator[RelayFactory]:
    started: list[OutboundRunner] = []

    async def make(**outbound: Any) -> Relay:
        cfg = delivery_config(tmp_path, dns_server, mx_farm.port, **outbound)
        spool = outbound_spool(cfg)
        suppression = open_suppression(cfg, None)
        assert isinstance(suppression, MemorySuppressionList)
        runner = OutboundRunner(cfg, spool=spool, suppression=suppression, resolver=make_resolver(cfg.dns))
        await runner.start()
        started.append(runner)
        return Relay(cfg, spool, suppression, runner)

    yield make
    for runner in started:
        await runner.stop(timeout=5.0)


def dsns_at_senders(farm: MxFarm) -> list[Received]:
    return [r for r in farm.at(MX_SENDERS) if r.mail_from == "<>"]


def delivery_status_blocks(received: Received) -> list[email.message.Message]:
    message = email.message_from_bytes(received.data, policy=email.policy.compat32)
    (status,) = [part for part in message.walk() if part.get_content_type() == "message/delivery-status"]
    blocks = status.get_payload()
    assert isinstance(blocks, list)
    return [block for block in blocks[1:] if isinstance(block, email.message.Message)]


async def test_delivers_via_the_preferred_mx_with_a_verp_sender_per_recipient(
    relay: RelayFactory, mx_farm: MxFarm
) -> None:
    r = await relay()
    queue_id = r.queue(["alice@multi.dest.test", "bob@multi.dest.test"])
    await r.drained()
    received = mx_farm.at(MX_MULTI_1)
    assert sorted(rcpt for item in received for rcpt in item.rcpt_tos) == [
        "alice@multi.dest.test",
        "bob@multi.dest.test",
    ]
    assert all(item.tls for item in received)
    for item in received:
        token = parse_return_path(item.mail_from, bounce_domain=BOUNCE_DOMAIN, secret=VERP_SECRET)
        assert token is not None and token.queue_id == queue_id and token.recipient == item.rcpt_tos[0]
    assert r.spool.locate(queue_id) is None


async def test_domain_without_mx_is_delivered_to_its_address(relay: RelayFactory, mx_farm: MxFarm) -> None:
    r = await relay(verp=False)
    r.queue(["carol@a-only.dest.test"])
    await r.drained()
    (received,) = mx_farm.at(MX_A_ONLY)
    assert received.rcpt_tos == ("carol@a-only.dest.test",) and received.mail_from == SENDER


async def test_greylisted_message_is_delivered_on_a_later_attempt(
    relay: RelayFactory, mx_farm: MxFarm
) -> None:
    r = await relay()
    queue_id = r.queue(["dave@tempfail.dest.test"])
    await wait_for(lambda: r.spool.locate(queue_id) == DEFERRED)
    state = r.spool.load_state(queue_id)
    assert state.attempts == 1 and state.last_status == 451
    assert state.next_attempt_at is not None and "Greylisted" in state.last_error
    assert mx_farm.at(MX_GREYLIST) == []
    await r.drained()
    (received,) = mx_farm.at(MX_GREYLIST)
    assert received.rcpt_tos == ("dave@tempfail.dest.test",)
    assert dsns_at_senders(mx_farm) == []


async def test_rejected_recipient_gets_a_dsn_and_is_suppressed(relay: RelayFactory, mx_farm: MxFarm) -> None:
    r = await relay()
    queue_id = r.queue(["gone@reject.dest.test"])
    await r.drained()
    (dsn,) = dsns_at_senders(mx_farm)
    assert dsn.rcpt_tos == (SENDER,)
    message = email.message_from_bytes(dsn.data, policy=email.policy.compat32)
    assert all_failures(message) == (frozenset(), frozenset({b"gone@reject.dest.test"}))
    (block,) = delivery_status_blocks(dsn)
    assert block["Status"] == "5.1.1" and block["Diagnostic-Code"].startswith("smtp; 550 5.1.1")
    assert block["Remote-MTA"] == "dns; mx.reject.dest.test"
    entry = await r.suppression.lookup("gone@reject.dest.test")
    assert entry is not None and entry.source == "bounce" and "550 5.1.1" in entry.reason
    assert entry.expires_at is not None  # [outbound] suppression_ttl
    assert r.spool.locate(queue_id) is None

    # The next message to the suppressed address is not attempted, and its sender is told why.
    r.queue(["gone@reject.dest.test"], seq=2)
    await wait_for(lambda: len(dsns_at_senders(mx_farm)) == 2)
    await r.drained()
    assert len([item for item in mx_farm.at(MX_REJECT) if item.rcpt_tos]) == 0
    (block,) = delivery_status_blocks(dsns_at_senders(mx_farm)[1])
    assert "suppressed" in block["Diagnostic-Code"]


async def test_partial_success_retries_only_the_deferred_recipient(
    relay: RelayFactory, mx_farm: MxFarm
) -> None:
    r = await relay(retry_initial=0.3, retry_max_interval=0.3)
    queue_id = r.queue(["ok@multi.dest.test", "bad@multi.dest.test", "soft@multi.dest.test"])
    queued_at = r.spool.read(INCOMING, queue_id).meta["queued_at"]
    await wait_for(lambda: r.spool.ids(DEFERRED) != [] and len(dsns_at_senders(mx_farm)) == 1)
    (rest_id,) = r.spool.ids(DEFERRED)
    rest = r.spool.read(DEFERRED, rest_id)
    assert rest_id != queue_id and r.spool.locate(queue_id) is None
    assert rest.meta["rcpt_to"] == ["soft@multi.dest.test"]
    assert rest.meta["parent_id"] == queue_id and rest.meta["queued_at"] == queued_at
    assert r.spool.load_state(rest_id).attempts == 1
    await wait_for(lambda: r.spool.load_state(rest_id).attempts >= 2)
    delivered = [item.rcpt_tos for item in mx_farm.at(MX_MULTI_1)]
    assert delivered == [("ok@multi.dest.test",)]  # never sent twice
    (block,) = delivery_status_blocks(dsns_at_senders(mx_farm)[0])
    assert block["Final-Recipient"] == "rfc822; bad@multi.dest.test"


async def test_message_still_deferred_after_max_age_bounces(relay: RelayFactory, mx_farm: MxFarm) -> None:
    r = await relay(retry_initial=0.1, retry_max_interval=0.1, retry_max_age=0.6)
    r.queue(["soft@multi.dest.test"])
    await r.drained()
    (dsn,) = dsns_at_senders(mx_farm)
    (block,) = delivery_status_blocks(dsn)
    assert (block["Action"], block["Status"]) == ("failed", "4.4.7")
    assert "delivery time expired" in block["Diagnostic-Code"]
    assert await r.suppression.entries() == []  # a temporary failure is no hard bounce


async def test_null_mx_bounces_without_suppressing(relay: RelayFactory, mx_farm: MxFarm) -> None:
    r = await relay()
    r.queue(["x@nullmx.dest.test"])
    await r.drained()
    (block,) = delivery_status_blocks(dsns_at_senders(mx_farm)[0])
    assert block["Status"] == "5.1.10" and "null MX" in block["Diagnostic-Code"]
    assert await r.suppression.entries() == []


async def test_a_bounce_is_never_bounced(relay: RelayFactory, mx_farm: MxFarm) -> None:
    r = await relay()
    queue_id = r.queue(["gone@reject.dest.test"], sender="")
    await r.drained()
    assert r.spool.locate(queue_id) is None
    assert dsns_at_senders(mx_farm) == [] and mx_farm.at(MX_SENDERS) == []


async def test_destination_answering_4xx_is_slowed(relay: RelayFactory, mx_farm: MxFarm) -> None:
    r = await relay(retry_initial=60.0, retry_max_interval=60.0)
    destination = r.runner.scheduler.destination("wide.dest.test")
    assert destination.concurrency == 20
    r.queue(["soft1@wide.dest.test", "soft2@wide.dest.test"])
    await wait_for(lambda: r.spool.ids(DEFERRED) != [])
    assert destination.concurrency == 10


async def test_rate_limit_is_honoured_on_an_injected_clock(
    tmp_path: Path, dns_server: DnsServer, mx_farm: MxFarm
) -> None:
    cfg = delivery_config(
        tmp_path, dns_server, mx_farm.port, destinations={"wide.dest.test": {"rate_per_minute": 5}}
    )
    received_at_each_wait: list[int] = []
    clock = VirtualTime(on_sleep=lambda: received_at_each_wait.append(len(mx_farm.at(MX_WIDE))))
    spool = outbound_spool(cfg)
    runner = OutboundRunner(
        cfg,
        spool=spool,
        suppression=open_suppression(cfg, None),
        resolver=make_resolver(cfg.dns),
        scheduler=DeliveryScheduler(cfg.outbound, clock=clock, sleep=clock.sleep),
    )
    spool.store([outbound_entry([f"user{i}@wide.dest.test"], seq=i) for i in range(12)])
    await runner.start()
    try:
        await wait_for(lambda: len(mx_farm.at(MX_WIDE)) == 12)
    finally:
        await runner.stop(timeout=5.0)
    # 5 messages in the first minute, 5 in the second, 2 in the third: two waits of exactly a minute.
    assert clock.sleeps == [0.0, 60.0] and clock.now == 120.0
    assert received_at_each_wait == [5, 10]


async def test_verp_bounce_from_the_remote_side_updates_the_suppression_list(
    relay: RelayFactory, mx_farm: MxFarm
) -> None:
    """The receiving MX accepted, then bounced later: its DSN comes back to the VERP address."""
    r = await relay()
    queue_id = r.queue(["later-gone@multi.dest.test"])
    await r.drained()
    (received,) = mx_farm.at(MX_MULTI_1)
    remote_dsn = build_dsn(
        reporting_mta="mx1.multi.dest.test",
        recipient=received.mail_from,
        original_queue_id="REMOTE1",
        original_raw=received.data,
        arrival=0.0,
        failures=[FailedRecipient("later-gone@multi.dest.test", "5.2.1", "550 5.2.1 mailbox disabled")],
        now=0.0,
    )
    bounces = BounceProcessor(bounce_domain=BOUNCE_DOMAIN, secret=VERP_SECRET, suppression=r.suppression)
    assert bounces.is_bounce_address(received.mail_from)
    result = await bounces.process(received.mail_from, remote_dsn.raw)
    assert result.action == "suppressed" and result.token is not None and result.token.queue_id == queue_id
    assert await r.suppression.lookup("later-gone@multi.dest.test") is not None


async def test_unreadable_entries_go_to_corrupt_and_the_rest_is_delivered(
    relay: RelayFactory, mx_farm: MxFarm
) -> None:
    r = await relay()
    (r.spool.root / INCOMING / "0018F2A6B3C4D5E6AAA.msg").write_bytes(b"not a spool file")
    no_recipients = r.spool.store(
        [({"kind": "outbound", "domain": "multi.dest.test"}, b"Subject: x\r\n\r\n")]
    )
    good = r.queue(["fine@multi.dest.test"])
    await r.drained()
    assert sorted(r.spool.ids(CORRUPT)) == sorted(["0018F2A6B3C4D5E6AAA", *no_recipients])
    assert r.spool.locate(good) is None
    assert [item.rcpt_tos for item in mx_farm.at(MX_MULTI_1)] == [("fine@multi.dest.test",)]
