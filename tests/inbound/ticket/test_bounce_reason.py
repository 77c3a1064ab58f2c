from __future__ import annotations

import pytest

from inbound.ticket.bounce_reason import REASONS, classify_failure


@pytest.mark.parametrize(
    ("status", "text", "expected"),
    [
        ("5.1.1", "550 5.1.1 <a@example.org>: Recipient address rejected: User unknown", "user_unknown"),
        (None, "550 <a@example.org> is a deactivated mailbox", "user_unknown"),
        (None, "User some.name (a@example.org) not listed in Domino Directory", "user_unknown"),
        (None, "554 client listed in zen.spamhaus.org", "spam_blocked"),
        (None, '550 "a@example.org" is not a known user', "user_unknown"),
        (None, "550 ** No mail box available for this user **", "user_unknown"),
        ("5.1.10", "550 5.1.10 RESOLVER.ADR.RecipientNotFound", "user_unknown"),
        ("5.2.2", "552 5.2.2 over quota", "mailbox_full"),
        (None, "452 <a@b.c> Mailbox size limit exceeded", "mailbox_full"),
        (None, "The recipient mailbox has exceeded its disk space limit.", "mailbox_full"),
        (None, "552 Message size exceeds fixed maximum message size", "message_too_large"),
        ("5.4.4", "Host or domain name not found. Name service error", "host_unknown"),
        (None, "550 No such domain at this location", "host_unknown"),
        (
            "5.7.1",
            "554 5.7.1 Service unavailable; client host blocked using zen.spamhaus.org",
            "spam_blocked",
        ),
        ("5.7.1", "550 5.7.1 Message rejected as spam by Content Filtering", "spam_blocked"),
        ("5.7.1", "553 you are trying to use me as a relay", "rejected"),
        ("5.7.1", "550 5.7.1 Unable to relay", "rejected"),
        ("4.4.7", "Delivery time expired", "expired"),
        (None, "retry timeout exceeded", "expired"),
        (None, "550 something went wrong", "other"),
        (None, "554 Mail from a@b.example rejected for policy reasons.", "rejected"),  # policy, per the docs
        (None, "550 Message rejected due to content restrictions", "spam_blocked"),
        # The reply to MAIL FROM is about the sender: a policy rejection, whatever it says of domain or user.
        (
            "5.1.7",
            "SMTP error from remote mail server after MAIL FROM:<a@b.example>:\n550 5.1.7 No such domain",
            "rejected",
        ),
        ("5.1.1", "said: 550 5.1.1 <a@b.example>: User unknown (in reply to MAIL FROM command)", "rejected"),
        (None, "after MAIL FROM:<a@b.example>: 554 client blocked using zen.spamhaus.org", "spam_blocked"),
        (
            None,
            "after MAIL FROM:<a@b.example> SIZE=99999999: 552 message size exceeds fixed limit",
            "message_too_large",
        ),
    ],
)
def test_reason(status: str | None, text: str, expected: str) -> None:
    assert classify_failure(status, text)[1] == expected
    assert expected in REASONS


@pytest.mark.parametrize(
    ("status", "text", "action", "expected"),
    [
        ("5.1.1", "", "", "permanent"),
        ("4.2.2", "", "", "transient"),
        (None, "451 try again later", "", "transient"),
        (None, "550 no", "", "permanent"),
        (None, "no code at all", "", "permanent"),
        ("5.0.0", "", "delayed", "transient"),
        ("4.4.7", "", "failed", "permanent"),  # the MTA gave up: the failure is final
    ],
)
def test_kind(status: str | None, text: str, action: str, expected: str) -> None:
    assert classify_failure(status, text, action=action)[0] == expected
