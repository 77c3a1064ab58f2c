from __future__ import annotations

from email.message import Message

from inbound.ticket.bounce import detect_bounce
from inbound.ticket.mime_tree import parse_mime
from inbound.ticket.mime_walk import collect_content


def _reports(*blocks: str) -> list[Message]:
    """The delivery-status parts of a DSN whose report consists of `blocks`."""
    report = "\r\n\r\n".join(blocks)
    raw = (
        "From: MAILER-DAEMON@mx.example.com\r\nSubject: Delivery Status Notification\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\r\n\r\n'
        "--r\r\nContent-Type: text/plain\r\n\r\nSee the report.\r\n"
        f"--r\r\nContent-Type: message/delivery-status\r\n\r\n{report}\r\n--r--\r\n"
    ).encode()
    return collect_content(parse_mime(raw)).delivery_reports


def _dsn(*blocks: str) -> dict[str, object]:
    return detect_bounce(_reports(*blocks), sender=None, subject=None, mail_from="", text=None)


MTA = "Reporting-MTA: dns; mx.example.com"


def test_failed_recipients_of_a_delivery_status_report() -> None:
    result = _dsn(
        MTA,
        "Final-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 5.1.1",
        "Final-Recipient: rfc822;<b@example.org>\r\nAction: FAILED\r\nStatus: 5.2.2",
        "Final-Recipient: rfc822; ok@example.org\r\nAction: delivered\r\nStatus: 2.0.0",
        "Final-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: 5.1.1",
    )
    assert result == {"is_bounce": True, "recipients": ["a@example.org", "b@example.org"]}


def test_status_decides_when_action_is_missing() -> None:
    result = _dsn(MTA, "Original-Recipient: rfc822; c@example.org\r\nStatus: 5.0.0")
    assert result == {"is_bounce": True, "recipients": ["c@example.org"]}


def test_delay_notices_are_not_bounces() -> None:
    result = _dsn(MTA, "Final-Recipient: rfc822; slow@example.org\r\nAction: delayed\r\nStatus: 4.4.7")
    assert result == {"is_bounce": False, "recipients": []}


def test_a_report_naming_no_recipient_counts_as_a_bounce() -> None:
    assert _dsn(MTA) == {"is_bounce": True, "recipients": []}


def _plain(sender: str | None, subject: str, text: str = "", mail_from: str = "") -> dict[str, object]:
    return detect_bounce([], sender=sender, subject=subject, mail_from=mail_from, text=text)


def test_plain_bounces_need_a_daemon_sender_and_a_bounce_subject() -> None:
    assert _plain("MAILER-DAEMON@mx.example.com", "failure notice", mail_from="x@example.com")["is_bounce"]
    assert _plain("postmaster@example.com", "Undeliverable: hello", mail_from="x@example.com")["is_bounce"]
    assert _plain("MAILER-DAEMON", "Returned mail: see transcript", mail_from="x@example.com")["is_bounce"]
    assert _plain("anyone@example.com", "Mail delivery failed", mail_from="")["is_bounce"]  # null sender
    assert not _plain("anyone@example.com", "Mail delivery failed", mail_from="anyone@example.com")[
        "is_bounce"
    ]
    assert not _plain("MAILER-DAEMON@mx.example.com", "Weekly statistics", mail_from="")["is_bounce"]


def test_failed_addresses_in_plain_bounce_texts() -> None:
    qmail = "I wasn't able to deliver your message.\n\n<one@example.net>:\n550 no such user\n"
    exim = (
        "could not be delivered to one or more of its\nrecipients. The following address(es) failed:\n\n"
        "  two@example.org\n    host mx.example.org\n    550 <two@example.org>: unknown\n\n  three@x.org\n"
    )
    exchange = (
        "Delivery has failed to these recipients or groups:\n\nfour@example.com (four@example.com)\nbye\n"
    )
    assert _plain(None, "failure notice", qmail)["recipients"] == ["one@example.net"]
    assert _plain(None, "Mail delivery failed", exim)["recipients"] == ["two@example.org", "three@x.org"]
    assert _plain(None, "Undeliverable: x", exchange)["recipients"] == ["four@example.com"]
    assert _plain(None, "failure notice", "no addresses here")["recipients"] == []
