"""The submission listener, driven by smtplib over real STARTTLS on loopback."""

from __future__ import annotations

import asyncio
import base64
import logging
import smtplib
import time
from contextlib import AbstractContextManager
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path

import dkim
import pytest

from outbound.dkim import dns_txt_value
from outbound.submission import SubmissionServer
from outbound.suppression import SUPPRESSION_FILE, MemorySuppressionList
from postroom.app.config import Config
from postroom.core.spool import INCOMING, Spool
from tests.outbound.submission_fixtures import (
    DKIM_KEY,
    HELPDESK_PASSWORD,
    OTHER_PASSWORD,
    FakeClock,
    TlsFiles,
    auth_plain,
    connect,
    dkim_dnsfunc,
    make_config,
    running_submission,
)
from tests.servers.dns import DnsServer

NOTIFICATION = (
    b"From: Helpdesk <support@mail-out.test>\r\n"
    b"To: Alice <alice@dest-one.test>, bob@dest-one.test\r\n"
    b"Cc: carol@Dest-Two.TEST\r\n"
    b"Subject: Ticket #42: an agent replied\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Hello,\r\n\r\nan agent replied to your ticket.\r\n"
)


def outbound_spool(cfg: Config) -> Spool:
    return Spool(cfg.outbound.spool_dir(cfg.spool.path)).create()


def suppression_for(cfg: Config) -> MemorySuppressionList:
    return MemorySuppressionList(cfg.outbound.spool_dir(cfg.spool.path) / SUPPRESSION_FILE)


def serving(cfg: Config, *, monotonic: FakeClock | None = None) -> AbstractContextManager[SubmissionServer]:
    """The listener with its own outbound spool and suppression list, as most tests here want it."""
    return running_submission(
        cfg, spool=outbound_spool(cfg), suppression=suppression_for(cfg), monotonic=monotonic
    )


def fixture_key_dns(name: bytes, timeout: float = 5) -> bytes | None:
    """dkimpy's DNS lookup, answered with the public half of the fixture key."""
    assert name == b"postroom._domainkey.mail-out.test."
    return dns_txt_value(DKIM_KEY.read_bytes()).encode()


def queued_ids(reply: bytes) -> list[str]:
    prefix = b"2.0.0 queued as "
    assert reply.startswith(prefix), reply
    return reply[len(prefix) :].decode().split()


def test_authenticated_submission_is_signed_and_spooled_once_per_recipient_domain(
    submission_config: Config, tls_files: TlsFiles, dns_server: DnsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="postroom.outbound")
    spool = outbound_spool(submission_config)
    woken: list[list[str]] = []
    with running_submission(
        submission_config, spool=spool, suppression=suppression_for(submission_config)
    ) as srv:
        srv.on_queued = woken.append
        with connect(srv, tls_files) as client:
            client.login("helpdesk", HELPDESK_PASSWORD)
            client.mail("bounces@mail-out.test")
            for rcpt in ("alice@dest-one.test", "bob@Dest-One.test", "carol@Dest-Two.TEST"):
                assert client.rcpt(rcpt)[0] == 250
            code, reply = client.data(NOTIFICATION)
    assert code == 250
    assert [r.message for r in caplog.records if r.levelno >= logging.WARNING] == []
    ids = queued_ids(reply)
    assert len(ids) == 2 and sorted(ids) == spool.ids(INCOMING)
    assert woken == [ids]
    queued = [r for r in caplog.records if r.message == "message queued for delivery"]
    assert sorted(r.queue_id for r in queued) == sorted(ids)  # type: ignore[attr-defined]

    entries = {m.meta["domain"]: m for m in (spool.read(INCOMING, i) for i in ids)}
    assert set(entries) == {"dest-one.test", "dest-two.test"}
    one, two = entries["dest-one.test"], entries["dest-two.test"]
    assert one.meta["rcpt_to"] == ["alice@dest-one.test", "bob@Dest-One.test"]
    assert two.meta["rcpt_to"] == ["carol@Dest-Two.TEST"]
    for entry in (one, two):
        assert entry.meta["kind"] == "outbound"
        assert entry.meta["mail_from"] == "bounces@mail-out.test"
        assert entry.meta["submitted_by"] == "helpdesk"
        assert entry.meta["client_ip"] == "127.0.0.1"
        assert entry.raw == one.raw  # the same signed message for every destination
    assert one.raw.startswith(b"DKIM-Signature: ")
    assert one.raw.endswith(NOTIFICATION)
    signature = dkim.DKIM(one.raw)
    assert signature.verify(dnsfunc=dkim_dnsfunc(dns_server))  # the key published in fixtures/dns
    assert signature.domain == b"mail-out.test" and signature.selector == b"postroom"

    message = BytesParser(policy=default_policy).parsebytes(one.raw)
    assert one.meta["message_id"] == message["Message-ID"]
    assert message["Message-ID"].endswith("@submit.mail-out.test>")
    assert message["Date"].datetime is not None
    assert message["Auto-Submitted"] == "auto-generated"


def test_headers_the_client_set_are_kept_as_they_are(submission_config: Config, tls_files: TlsFiles) -> None:
    raw = (
        b"Message-ID: <ticket-42-reply-7@helpdesk.example>\r\n"
        b"Date: Mon, 02 Nov 2026 10:00:00 +0100\r\n"
        b"Auto-Submitted: auto-replied\r\n"
        b"From: support@notify.mail-out.test\r\n"
        b"To: alice@dest-one.test\r\n"
        b"Subject: kept\r\n\r\nbody\r\n"
    )
    spool = outbound_spool(submission_config)
    with (
        running_submission(
            submission_config, spool=spool, suppression=suppression_for(submission_config)
        ) as srv,
        connect(srv, tls_files) as client,
    ):
        client.login("helpdesk", HELPDESK_PASSWORD)
        client.sendmail("support@notify.mail-out.test", ["alice@dest-one.test"], raw)
    (queue_id,) = spool.ids(INCOMING)
    stored = spool.read(INCOMING, queue_id)
    assert stored.meta["message_id"] == "<ticket-42-reply-7@helpdesk.example>"
    # Only the signature was added; a subdomain without its own key is signed with the parent's.
    signature_end = stored.raw.index(b"\r\nMessage-ID:") + 2
    assert stored.raw[signature_end:] == raw
    assert b" d=mail-out.test;" in stored.raw[:signature_end]
    assert dkim.verify(stored.raw, dnsfunc=fixture_key_dns)


def test_no_auto_submitted_is_added_when_the_option_is_off(
    tmp_path: Path, tls_files: TlsFiles, user_hashes: dict[str, str]
) -> None:
    cfg = make_config(tmp_path, tls_files, user_hashes, add_auto_submitted=False)
    spool = outbound_spool(cfg)
    with (
        running_submission(cfg, spool=spool, suppression=suppression_for(cfg)) as srv,
        connect(srv, tls_files) as c,
    ):
        c.login("helpdesk", HELPDESK_PASSWORD)
        c.sendmail("a@mail-out.test", ["x@dest-one.test"], b"From: a@mail-out.test\r\n\r\nhi\r\n")
    (queue_id,) = spool.ids(INCOMING)
    assert b"Auto-Submitted" not in spool.read(INCOMING, queue_id).raw


def test_auth_is_neither_offered_nor_accepted_before_starttls(
    submission_config: Config, tls_files: TlsFiles
) -> None:
    credentials = base64.b64encode(f"\0helpdesk\0{HELPDESK_PASSWORD}".encode()).decode()
    with serving(submission_config) as srv:
        with connect(srv, tls_files, starttls=False) as client:
            assert client.has_extn("starttls")
            assert not client.has_extn("auth")
            code, reply = client.docmd("AUTH", f"PLAIN {credentials}")
            assert (code, reply[:5]) == (530, b"5.7.0")
            assert client.docmd("MAIL", "FROM:<support@mail-out.test>")[0] == 530
        with connect(srv, tls_files) as client:
            assert client.esmtp_features["auth"].split() == ["LOGIN", "PLAIN"]


def test_login_mechanism_and_wrong_password(submission_config: Config, tls_files: TlsFiles) -> None:
    with serving(submission_config) as srv:
        with connect(srv, tls_files) as client:
            with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
                auth_plain(client, "helpdesk", "not the password")
            assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (535, b"5.7.8")
            with pytest.raises(smtplib.SMTPAuthenticationError) as unknown:
                auth_plain(client, "nobody", HELPDESK_PASSWORD)
            assert unknown.value.smtp_code == 535
            assert client.mail("support@mail-out.test")[0] == 530  # still not authenticated
        with connect(srv, tls_files) as client:
            client.user, client.password = "helpdesk", HELPDESK_PASSWORD
            assert client.auth("LOGIN", client.auth_login)[0] == 235


def test_repeated_failures_lock_out_until_the_lockout_expires(
    submission_config: Config, tls_files: TlsFiles
) -> None:
    clock = FakeClock()
    limit = submission_config.submission.auth_failures_before_lockout
    with serving(submission_config, monotonic=clock) as srv:
        with connect(srv, tls_files) as client:
            for _ in range(limit):
                with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                    auth_plain(client, "helpdesk", "guess")
                assert failed.value.smtp_code == 535
            with pytest.raises(smtplib.SMTPAuthenticationError) as locked:
                auth_plain(client, "helpdesk", HELPDESK_PASSWORD)
            assert (locked.value.smtp_code, locked.value.smtp_error[:5]) == (454, b"4.7.0")

        # The real client on another address is not locked out by this host's failures; the locked address
        # is refused for any user.
        with connect(srv, tls_files, source_ip="127.0.0.2") as client:
            assert auth_plain(client, "helpdesk", HELPDESK_PASSWORD)[0] == 235
        with connect(srv, tls_files, source_ip="127.0.0.2") as client:
            assert auth_plain(client, "other", OTHER_PASSWORD)[0] == 235
        with connect(srv, tls_files) as client:
            with pytest.raises(smtplib.SMTPAuthenticationError) as same_ip:
                auth_plain(client, "other", OTHER_PASSWORD)
            assert same_ip.value.smtp_code == 454

        clock.advance(submission_config.submission.lockout_seconds - 1)
        with connect(srv, tls_files) as client, pytest.raises(smtplib.SMTPAuthenticationError):
            auth_plain(client, "helpdesk", HELPDESK_PASSWORD)
        clock.advance(2)
        with connect(srv, tls_files) as client:
            assert auth_plain(client, "helpdesk", HELPDESK_PASSWORD)[0] == 235


def test_failures_spread_beyond_the_lockout_window_do_not_lock_out(
    submission_config: Config, tls_files: TlsFiles
) -> None:
    clock = FakeClock()
    sub = submission_config.submission
    with (
        serving(submission_config, monotonic=clock) as srv,
        connect(srv, tls_files) as client,
    ):
        for _ in range(sub.auth_failures_before_lockout * 2):
            with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
                auth_plain(client, "helpdesk", "typo")
            assert failed.value.smtp_code == 535
            clock.advance(sub.lockout_seconds / (sub.auth_failures_before_lockout - 1) + 1)
        assert auth_plain(client, "helpdesk", HELPDESK_PASSWORD)[0] == 235


def test_a_user_may_send_only_as_its_sender_domains(submission_config: Config, tls_files: TlsFiles) -> None:
    spool = outbound_spool(submission_config)
    with (
        running_submission(
            submission_config, spool=spool, suppression=suppression_for(submission_config)
        ) as srv,
        connect(srv, tls_files) as client,
    ):
        client.login("helpdesk", HELPDESK_PASSWORD)
        code, reply = client.mail("ceo@other.test")
        assert (code, reply[:5]) == (553, b"5.7.1")
        assert client.mail("support@sub.notify.mail-out.test")[0] == 553  # only listed domains

        client.rset()
        assert client.mail("support@mail-out.test")[0] == 250
        assert client.rcpt("alice@dest-one.test")[0] == 250
        code, reply = client.data(b"From: ceo@other.test\r\nTo: alice@dest-one.test\r\n\r\nhi\r\n")
        assert (code, reply[:5]) == (553, b"5.7.1")

        assert client.mail("support@mail-out.test")[0] == 250
        assert client.rcpt("alice@dest-one.test")[0] == 250
        code, reply = client.data(b"To: alice@dest-one.test\r\nSubject: no From\r\n\r\nhi\r\n")
        assert (code, reply[:5]) == (550, b"5.6.0")
    assert spool.ids(INCOMING) == []


def test_suppressed_recipients_are_refused_at_rcpt(submission_config: Config, tls_files: TlsFiles) -> None:
    spool = outbound_spool(submission_config)
    with running_submission(
        submission_config, spool=spool, suppression=suppression_for(submission_config)
    ) as srv:
        # Added through another instance on the same file, as `postroom suppression add` does.
        asyncio.run(
            suppression_for(submission_config).add(
                "Bounced@DEST-ONE.test", reason="550 5.1.1", source="bounce", ttl=60
            )
        )
        with connect(srv, tls_files) as client:
            client.login("helpdesk", HELPDESK_PASSWORD)
            client.mail("support@mail-out.test")
            code, reply = client.rcpt("bounced@dest-one.test")
            assert (code, reply[:5]) == (550, b"5.1.1")
            assert client.rcpt("alice@dest-one.test")[0] == 250
            assert client.data(NOTIFICATION)[0] == 250
    (queue_id,) = spool.ids(INCOMING)
    assert spool.read_meta(INCOMING, queue_id)["rcpt_to"] == ["alice@dest-one.test"]


def test_size_limit_answers_552_5_3_4(
    tmp_path: Path, tls_files: TlsFiles, user_hashes: dict[str, str]
) -> None:
    cfg = make_config(tmp_path, tls_files, user_hashes, max_message_size=10_000)
    spool = outbound_spool(cfg)
    big = b"From: support@mail-out.test\r\n\r\n" + (b"x" * 76 + b"\r\n") * 200
    with (
        running_submission(cfg, spool=spool, suppression=suppression_for(cfg)) as srv,
        connect(srv, tls_files) as c,
    ):
        c.login("helpdesk", HELPDESK_PASSWORD)
        assert c.mail("support@mail-out.test", ["SIZE=20000"]) == (
            552,
            b"5.3.4 message size exceeds fixed limit",
        )
        c.mail("support@mail-out.test")
        c.rcpt("alice@dest-one.test")
        code, reply = c.data(big)
        assert (code, reply[:5]) == (552, b"5.3.4")
    assert spool.ids(INCOMING) == []


def test_clients_outside_allowed_networks_are_refused_at_connect(
    tmp_path: Path, tls_files: TlsFiles, user_hashes: dict[str, str]
) -> None:
    cfg = make_config(tmp_path, tls_files, user_hashes, allowed_networks=["127.0.0.1/32"])
    with running_submission(cfg, spool=outbound_spool(cfg), suppression=suppression_for(cfg)) as srv:
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            smtplib.SMTP("127.0.0.1", srv.port, timeout=10, source_address=("127.0.0.3", 0))
        assert (refused.value.smtp_code, refused.value.smtp_error[:5]) == (554, b"5.7.1")
        with connect(srv, tls_files) as allowed:
            assert allowed.noop()[0] == 250


def test_a_full_spool_defers_with_452_4_3_1(submission_config: Config, tls_files: TlsFiles) -> None:
    full = Spool(
        submission_config.outbound.spool_dir(submission_config.spool.path), min_free_bytes=2**62
    ).create()
    with (
        running_submission(
            submission_config, spool=full, suppression=suppression_for(submission_config)
        ) as srv,
        connect(srv, tls_files) as client,
    ):
        client.login("helpdesk", HELPDESK_PASSWORD)
        client.mail("support@mail-out.test")
        client.rcpt("alice@dest-one.test")
        code, reply = client.data(NOTIFICATION)
    assert (code, reply[:5]) == (452, b"4.3.1")
    assert full.ids(INCOMING) == []


def test_many_messages_over_one_session_each_get_their_own_queue_entry(
    submission_config: Config, tls_files: TlsFiles
) -> None:
    spool = outbound_spool(submission_config)
    with (
        running_submission(
            submission_config, spool=spool, suppression=suppression_for(submission_config)
        ) as srv,
        connect(srv, tls_files) as client,
    ):
        client.login("helpdesk", HELPDESK_PASSWORD)
        replies = [
            client.sendmail("support@mail-out.test", [f"user{i}@dest-one.test"], NOTIFICATION)
            for i in range(20)
        ]
    assert replies == [{}] * 20  # no refused recipients
    recipients = sorted(spool.read_meta(INCOMING, i)["rcpt_to"][0] for i in spool.ids(INCOMING))
    assert recipients == sorted(f"user{i}@dest-one.test" for i in range(20))


def test_stop_ends_idle_tls_sessions_promptly(submission_config: Config, tls_files: TlsFiles) -> None:
    spool = outbound_spool(submission_config)
    with running_submission(
        submission_config, spool=spool, suppression=suppression_for(submission_config)
    ) as srv:
        idle = connect(srv, tls_files)
        auth_plain(idle, "helpdesk", HELPDESK_PASSWORD)
        started = time.monotonic()
    assert time.monotonic() - started < 2  # an idle client never sends close_notify: not waited for
    with pytest.raises(smtplib.SMTPServerDisconnected):
        idle.noop()
    idle.close()


def test_control_characters_in_the_envelope_are_refused(
    submission_config: Config, tls_files: TlsFiles
) -> None:
    spool = outbound_spool(submission_config)
    with (
        running_submission(
            submission_config, spool=spool, suppression=suppression_for(submission_config)
        ) as srv,
        connect(srv, tls_files) as client,
    ):
        client.login("helpdesk", HELPDESK_PASSWORD)
        code, reply = client.docmd("MAIL FROM:<supp\0ort@mail-out.test>")
        assert (code, reply[:5]) == (501, b"5.5.4")
        code, reply = client.docmd('MAIL FROM:<"ceo@other.test"@mail-out.test>')
        assert (code, reply[:5]) == (553, b"5.7.1")
        assert client.mail("support@mail-out.test")[0] == 250
        for rcpt in ("v\0@other.example", "v@other\0.example", "v\x1b@other.example"):
            code, reply = client.docmd(f"RCPT TO:<{rcpt}>")
            assert (code, reply[:5]) == (501, b"5.5.4"), rcpt
        code, reply = client.docmd("EHLO c\0.example")
        assert (code, reply[:5]) == (501, b"5.5.4")
    assert spool.ids(INCOMING) == []


def test_recipients_must_be_plain_mailboxes(submission_config: Config, tls_files: TlsFiles) -> None:
    with (
        serving(submission_config) as srv,
        connect(srv, tls_files) as client,
    ):
        client.login("helpdesk", HELPDESK_PASSWORD)
        assert client.mail("support@mail-out.test")[0] == 250
        for rcpt in ("user@[192.0.2.1]", "user@localhost", "user@-bad.example"):
            code, reply = client.docmd(f"RCPT TO:<{rcpt}>")
            assert code in (501, 553), (rcpt, code, reply)
        assert client.rcpt("alice@dest-one.test")[0] == 250


def test_a_from_header_the_strict_parser_doubts_is_refused(
    submission_config: Config, tls_files: TlsFiles
) -> None:
    """getaddresses on 3.11.7 reads these as an address in the user's domain (CVE-2023-27043)."""
    spool = outbound_spool(submission_config)
    with (
        running_submission(
            submission_config, spool=spool, suppression=suppression_for(submission_config)
        ) as srv,
        connect(srv, tls_files) as client,
    ):
        client.login("helpdesk", HELPDESK_PASSWORD)
        for sender in (
            '"ceo@other.test" support@mail-out.test',
            "ceo@other.test (support@mail-out.test",
            '"ceo@other.test"@mail-out.test',
        ):
            assert client.mail("support@mail-out.test")[0] == 250
            assert client.rcpt("alice@dest-one.test")[0] == 250
            code, reply = client.data(f"From: {sender}\r\nTo: alice@dest-one.test\r\n\r\nhi\r\n".encode())
            assert (code, reply[:5]) == (550, b"5.6.0"), sender
    assert spool.ids(INCOMING) == []


def test_auth_plain_refuses_to_act_as_another_identity(
    submission_config: Config, tls_files: TlsFiles
) -> None:
    """RFC 4616: an authorization identity other than the login must fail, not be ignored."""

    def plain(authzid: str, login: str) -> str:
        return base64.b64encode(f"{authzid}\0{login}\0{HELPDESK_PASSWORD}".encode()).decode()

    with serving(submission_config) as srv:
        with connect(srv, tls_files) as client:
            code, reply = client.docmd("AUTH", f"PLAIN {plain('postmaster', 'helpdesk')}")
            assert (code, reply[:5]) == (535, b"5.7.8")
            assert client.mail("support@mail-out.test")[0] == 530  # not logged in as anyone
            code, reply = client.docmd("AUTH", "PLAIN")  # the same, after an empty challenge
            assert code == 334
            code, reply = client.docmd(plain("postmaster", "helpdesk"))
            assert (code, reply[:5]) == (535, b"5.7.8")
        with connect(srv, tls_files) as client:
            assert client.docmd("AUTH", f"PLAIN {plain('helpdesk', 'helpdesk')}")[0] == 235
        with connect(srv, tls_files) as client:
            code, _ = client.docmd("AUTH", "PLAIN")
            assert code == 334 and client.docmd(plain("", "helpdesk"))[0] == 235
