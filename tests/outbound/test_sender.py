"""One SMTP session against real aiosmtpd receivers on 127.0.0.21/.22/.29."""

from __future__ import annotations

from outbound.mx import MxTarget
from outbound.sender import CANNOT_CONNECT, Envelope, SessionSettings, deliver
from tests.outbound.delivery_fixtures import MX_BAD_TLS, MX_DOWN, MX_MULTI_1, MX_MULTI_2, MxFarm, message

SETTINGS = SessionSettings(helo_name="relay.postroom.test", connect_timeout=2.0, command_timeout=5.0)


def target(address: str, farm: MxFarm) -> MxTarget:
    return MxTarget(f"mx-{address}.dest.test", address, farm.port)


async def test_several_envelopes_share_one_encrypted_connection(mx_farm: MxFarm) -> None:
    envelopes = [
        Envelope(f"q{i}", "helpdesk@senders.dest.test", (f"user{i}@multi.dest.test",), message(i))
        for i in range(3)
    ]
    session = await deliver([target(MX_MULTI_1, mx_farm)], envelopes, SETTINGS)
    assert all(r.delivered and r.remote for r in session.all_results())
    assert session.tls and session.relay is not None and session.relay.address == MX_MULTI_1
    received = mx_farm.at(MX_MULTI_1)
    assert [r.rcpt_tos for r in received] == [(f"user{i}@multi.dest.test",) for i in range(3)]
    assert {r.connection for r in received} == {1} and all(r.tls for r in received)
    assert mx_farm.meters[MX_MULTI_1].total == 1
    assert received[0].data.replace(b"\r\n", b"\n") == message(0).replace(b"\r\n", b"\n")


async def test_each_recipient_gets_its_own_reply(mx_farm: MxFarm) -> None:
    rcpts = ("ok@multi.dest.test", "bad@multi.dest.test", "soft@multi.dest.test")
    session = await deliver(
        [target(MX_MULTI_1, mx_farm)], [Envelope("q1", "h@senders.dest.test", rcpts, message(1))], SETTINGS
    )
    by_rcpt = {r.rcpt: r for r in session.results["q1"]}
    assert by_rcpt["ok@multi.dest.test"].delivered
    assert by_rcpt["bad@multi.dest.test"].permanent and by_rcpt["bad@multi.dest.test"].code == 550
    assert by_rcpt["bad@multi.dest.test"].diagnostic.startswith("550 5.1.1")
    soft = by_rcpt["soft@multi.dest.test"]
    assert soft.code == 451 and not soft.permanent and not soft.delivered
    assert [r.rcpt_tos for r in mx_farm.at(MX_MULTI_1)] == [("ok@multi.dest.test",)]
    assert not session.failed_temporarily  # something got through: no slow-down


async def test_transaction_with_no_accepted_recipient_is_reset_and_the_next_goes_through(
    mx_farm: MxFarm,
) -> None:
    envelopes = [
        Envelope("q1", "h@senders.dest.test", ("bad1@multi.dest.test", "bad2@multi.dest.test"), message(1)),
        Envelope("q2", "h@senders.dest.test", ("good@multi.dest.test",), message(2)),
    ]
    session = await deliver([target(MX_MULTI_1, mx_farm)], envelopes, SETTINGS)
    assert [r.code for r in session.results["q1"]] == [550, 550]
    assert [r.code for r in session.results["q2"]] == [250]
    assert [(r.mail_from, r.rcpt_tos) for r in mx_farm.at(MX_MULTI_1)] == [
        ("h@senders.dest.test", ("good@multi.dest.test",))
    ]


async def test_null_sender_is_sent_as_empty_reverse_path(mx_farm: MxFarm) -> None:
    session = await deliver(
        [target(MX_MULTI_1, mx_farm)],
        [Envelope("dsn", "", ("helpdesk@senders.dest.test",), message(1))],
        SETTINGS,
    )
    assert session.delivered_any
    assert mx_farm.at(MX_MULTI_1)[0].mail_from == "<>"


async def test_unreachable_host_falls_through_to_the_next(mx_farm: MxFarm) -> None:
    targets = [target(MX_DOWN, mx_farm), target(MX_MULTI_1, mx_farm)]
    session = await deliver(
        targets, [Envelope("q1", "h@senders.dest.test", ("a@backup.dest.test",), message(1))], SETTINGS
    )
    assert session.delivered_any and session.relay == targets[1]
    assert len(mx_farm.at(MX_MULTI_1)) == 1


async def test_no_reachable_host_defers_every_recipient(mx_farm: MxFarm) -> None:
    envelopes = [Envelope("q1", "h@s.test", ("a@x.test", "b@x.test"), message(1))]
    session = await deliver([target(MX_DOWN, mx_farm)], envelopes, SETTINGS)
    results = session.results["q1"]
    assert [r.code for r in results] == [CANNOT_CONNECT, CANNOT_CONNECT]
    assert all(not r.remote and MX_DOWN in r.message for r in results)
    assert session.failed_temporarily and session.relay is None


async def test_required_tls_skips_a_host_without_starttls(mx_farm: MxFarm) -> None:
    required = SessionSettings("relay.postroom.test", 2.0, 5.0, require_tls=True)
    envelope = Envelope("q1", "h@senders.dest.test", ("a@multi.dest.test",), message(1))
    plain_only = await deliver([target(MX_MULTI_2, mx_farm)], [envelope], required)
    assert plain_only.failed_temporarily
    assert "STARTTLS" in plain_only.results["q1"][0].message
    assert mx_farm.at(MX_MULTI_2) == []
    with_backup = await deliver(
        [target(MX_MULTI_2, mx_farm), target(MX_MULTI_1, mx_farm)], [envelope], required
    )
    assert with_backup.delivered_any and with_backup.tls
    assert [r.tls for r in mx_farm.at(MX_MULTI_1)] == [True]


async def test_opportunistic_tls_sends_in_plain_text_when_not_offered(mx_farm: MxFarm) -> None:
    envelope = Envelope("q1", "h@senders.dest.test", ("a@multi.dest.test",), message(1))
    session = await deliver([target(MX_MULTI_2, mx_farm)], [envelope], SETTINGS)
    assert session.delivered_any and not session.tls
    assert [r.tls for r in mx_farm.at(MX_MULTI_2)] == [False]


async def test_before_message_runs_once_per_transaction(mx_farm: MxFarm) -> None:
    calls = []

    async def pace() -> None:
        calls.append(len(mx_farm.at(MX_MULTI_1)))

    envelopes = [
        Envelope(f"q{i}", "h@senders.dest.test", ("a@multi.dest.test",), message(i)) for i in range(4)
    ]
    await deliver([target(MX_MULTI_1, mx_farm)], envelopes, SETTINGS, before_message=pace)
    assert calls == [0, 1, 2, 3]  # each call happens before that transaction's message arrives


async def test_failed_tls_handshake_falls_back_to_plain_text_unless_tls_is_required(mx_farm: MxFarm) -> None:
    envelope = Envelope("q1", "h@senders.dest.test", ("a@multi.dest.test",), message(1))
    session = await deliver([target(MX_BAD_TLS, mx_farm)], [envelope], SETTINGS)
    assert session.delivered_any and not session.tls
    assert [r.tls for r in mx_farm.at(MX_BAD_TLS)] == [False]
    assert mx_farm.meters[MX_BAD_TLS].total == 2  # the failed handshake, then the plain-text session
    required = SessionSettings("relay.postroom.test", 2.0, 5.0, require_tls=True)
    refused = await deliver([target(MX_BAD_TLS, mx_farm)], [envelope], required)
    assert refused.failed_temporarily and "STARTTLS failed" in refused.results["q1"][0].message
    assert len(mx_farm.at(MX_BAD_TLS)) == 1


async def test_eight_bit_message_is_sent_as_8bitmime_unchanged(mx_farm: MxFarm) -> None:
    raw = "Subject: Grüße\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSchöne Grüße.\r\n".encode()
    envelope = Envelope("q1", "h@senders.dest.test", ("a@multi.dest.test",), raw)
    session = await deliver([target(MX_MULTI_1, mx_farm)], [envelope], SETTINGS)
    assert session.delivered_any
    assert mx_farm.at(MX_MULTI_1)[0].data == raw
