from __future__ import annotations

import pytest

from inbound.ticket.bounce_formats import MAX_SCANNED_LINES, explanation_text, failed_recipients_in_text

QMAIL = (
    "Hi. This is the qmail-send program at mx.example.net.\nI'm afraid I wasn't able to deliver your message "
    "to the following addresses.\nThis is a permanent error; I've given up. Sorry it didn't work out.\n\n"
    "<one@example.net>:\n192.0.2.1 does not like recipient.\nRemote host said: 550 5.1.1 unknown user\n\n"
    "--- Below this line is a copy of the message.\n\nTo: someone@example.org\n"
)
EXIM = (
    "This message was created automatically by mail delivery software.\n\nA message that you sent could not "
    "be delivered to one or more of its\nrecipients. This is a permanent error. The following address(es) "
    "failed:\n\n  two@example.org\n    host mx.example.org [192.0.2.2]\n"
    "    SMTP error from remote mail server "
    "after RCPT TO:<two@example.org>:\n    550 5.1.1 unknown\n\n  three@x.org\n    Unrouteable address\n"
)
EXCHANGE = (
    "Delivery has failed to these recipients or groups:\n\nfour@example.com (four@example.com)\n"
    "The e-mail address you entered couldn't be found.\n"
)
O365 = "Your message to five@example.com couldn't be delivered.\nfive wasn't found at example.com.\n"
GMAIL = (
    "Delivery to the following recipient failed permanently:\n\n     six@example.com\n\n"
    "Technical details of permanent failure:\nThe email account that you tried to reach does not exist.\n"
)
POSTFIX = (
    "I'm sorry to have to inform you that your message could not\nbe delivered to one or more recipients.\n\n"
    "<seven@example.org>: host mx.example.org[192.0.2.7] said: 550 5.1.1 User unknown (in reply to RCPT TO "
    "command)\n"
)
LOTUS = (
    "Your message\n\n  Subject: hello\n\nwas not delivered to:\n\n  eight@example.com\n\n"
    "because:\n\n  User eight not listed\n"
)
GROUPWISE = (
    "The message that you sent was undeliverable to the following:\n\tnine@example.com (user not found)\n"
)
SENDMAIL = (
    "----- The following addresses had permanent fatal errors -----\n<ten@example.com>\n"
    "    (reason: 550 5.1.1 User unknown)\n"
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (QMAIL, ["one@example.net"]),
        (EXIM, ["two@example.org", "three@x.org"]),
        (EXCHANGE, ["four@example.com"]),
        (O365, ["five@example.com"]),
        (GMAIL, ["six@example.com"]),
        (POSTFIX, ["seven@example.org"]),
        (LOTUS, ["eight@example.com"]),
        (GROUPWISE, ["nine@example.com"]),
        (SENDMAIL, ["ten@example.com"]),
        ("Intended recipient: i@example.net\n\nThe following mail has been returned.\n", ["i@example.net"]),
        ("Delivery failed 20 attempts: d@example.ph\n", ["d@example.ph"]),
        (
            "did not reach the following recipient(s):\n\nc=US;a= ;p=X;dda:SMTP=x4@example.COM; on Fri\n",
            ["x4@example.COM"],
        ),
        (
            "could not be delivered:\n\n  an undisclosed address\n    (generated from g@example.com)\n",
            ["g@example.com"],
        ),
        ("Your message to <r@example.com> was automatically rejected:\nQuota exceeded\n", ["r@example.com"]),
        ("Sorry.\n  To: list@example.org\nThe mailbox lone@example.org is closed.\n", ["lone@example.org"]),
        ("no addresses here", []),
    ],
    ids=[
        "qmail",
        "exim",
        "exchange",
        "o365",
        "gmail",
        "postfix",
        "lotus",
        "groupwise",
        "sendmail",
        "intended recipient",
        "smtp32",
        "x400",
        "exim generated from",
        "rejected",
        "lone address",
        "none",
    ],
)
def test_formats(text: str, expected: list[str]) -> None:
    assert [failure.email for failure in failed_recipients_in_text(text)] == expected


def test_the_returned_message_is_not_read_for_addresses() -> None:
    assert "someone@example.org" not in explanation_text(QMAIL)
    text = (
        "could not be delivered to:\n\n  gone@example.org\n\nReceived: x\nFrom: me@example.com\nTo: a@b.org\n"
    )
    assert [f.email for f in failed_recipients_in_text(text)] == ["gone@example.org"]


def test_the_context_holds_the_servers_words() -> None:
    (failure,) = failed_recipients_in_text(QMAIL)
    assert "550 5.1.1 unknown user" in failure.context


def test_many_loose_addresses_name_nobody() -> None:
    text = "Sorry.\nContact a@example.org, b@example.org or c@example.org for help.\n"
    assert failed_recipients_in_text(text) == []


def test_ignored_addresses_and_bounded_scan() -> None:
    assert failed_recipients_in_text(QMAIL, ignore=frozenset({"one@example.net"})) == []
    late = "\n" * MAX_SCANNED_LINES + "<late@example.org>:\n"
    assert failed_recipients_in_text(late) == []


def test_returned_headers_written_without_a_space_end_the_explanation() -> None:
    # Zoho pastes the original's headers right after its words: "Received:from", folded lines between.
    text = (
        "A message that you sent could not be delivered to one or more of its recipients.\n\n"
        "a@example.org Invalid Address, ERROR_CODE :550, ERROR_CODE :5.1.1 <a@example.org>... User\n\n"
        "Received:from mail.example.com by mx.example.com\n\twith SMTP id 1; Fri, 12 Dec 2014 02:46:23\n"
        "Message-ID:<1.2@example.net>\nDate:Fri, 12 Dec 2014 10:46:23 +0000\nFrom:Me <me@example.net>\n"
    )
    assert "Received:from" not in explanation_text(text)
    assert [f.email for f in failed_recipients_in_text(text)] == ["a@example.org"]
