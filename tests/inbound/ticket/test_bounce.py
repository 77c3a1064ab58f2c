from __future__ import annotations

from typing import Any

from inbound.ticket.bounce import MAX_FLUFL_PARTS, _named_in, _small_enough_for_flufl, detect_bounce
from inbound.ticket.mail_headers import HeaderFields
from inbound.ticket.mime_tree import parse_mime

MTA = "Reporting-MTA: dns; mx.example.com"


def _bounce(raw: str, *, mail_from: str = "", text: str | None = None, report_type: str | None = None) -> Any:
    root = parse_mime(raw.replace("\n", "\r\n").encode())
    headers = HeaderFields.read(root).ordered
    return detect_bounce(headers, root, mail_from=mail_from, text=text, report_type=report_type)


def _dsn(*blocks: str, text: str = "See the report.") -> Any:
    report = "\n\n".join(blocks)
    return _bounce(
        "From: MAILER-DAEMON@mx.example.com\nSubject: Delivery Status Notification\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\n\n'
        f"--r\nContent-Type: text/plain\n\n{text}\n"
        f"--r\nContent-Type: message/delivery-status\n\n{report}\n--r--\n",
        text=text,
        report_type="delivery-status",
    )


def _plain(subject: str, text: str, *, sender: str = "MAILER-DAEMON@mx.example.com", mail_from: str = "",
           extra: str = "") -> Any:  # fmt: skip
    return _bounce(f"From: {sender}\nSubject: {subject}\n{extra}\n{text}", mail_from=mail_from, text=text)


def test_failed_recipients_of_a_delivery_status_report_with_detail() -> None:
    result = _dsn(
        MTA,
        "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1",
        "Final-Recipient: rfc822;<b@example.org>\nAction: FAILED\nStatus: 5.2.2\n"
        "Diagnostic-Code: smtp; 552 5.2.2 Mailbox full",
        "Final-Recipient: rfc822; ok@example.org\nAction: delivered\nStatus: 2.0.0",
        "Final-Recipient: rfc822; a@example.org\nAction: failed\nStatus: 5.1.1",
    )
    assert result == {
        "is_bounce": True,
        "type": "failed",
        "recipients": ["a@example.org", "b@example.org"],
        "recipients_detail": [
            {"email": "a@example.org", "status": "5.1.1", "kind": "permanent", "reason": "user_unknown"},
            {"email": "b@example.org", "status": "5.2.2", "kind": "permanent", "reason": "mailbox_full"},
        ],
    }


def test_the_original_recipient_is_preferred_over_the_forwarding_target() -> None:
    result = _dsn(
        MTA,
        "Original-Recipient: rfc822; sales@acme.example\nFinal-Recipient: rfc822; bob@home.example\n"
        "Action: failed\nStatus: 5.1.1",
    )
    assert result["recipients"] == ["sales@acme.example"]


def test_status_decides_when_action_is_missing() -> None:
    assert _dsn(MTA, "Final-Recipient: rfc822; c@example.org\nStatus: 5.0.0")["recipients"] == [
        "c@example.org"
    ]


def test_delay_notices_are_not_bounces_but_say_who_is_waiting() -> None:
    result = _dsn(MTA, "Final-Recipient: rfc822; slow@example.org\nAction: delayed\nStatus: 4.4.7")
    assert result == {
        "is_bounce": False,
        "type": "delayed",
        "recipients": [],
        "recipients_detail": [
            {"email": "slow@example.org", "status": "4.4.7", "kind": "transient", "reason": "expired"}
        ],
    }


def test_delivery_receipts_are_nothing() -> None:
    result = _dsn(MTA, "Final-Recipient: rfc822; ok@example.org\nAction: delivered\nStatus: 2.0.0")
    assert (result["is_bounce"], result["type"]) == (False, None)


def test_a_report_naming_no_recipient_counts_as_a_bounce() -> None:
    assert (_dsn(MTA)["is_bounce"], _dsn(MTA)["recipients"]) == (True, [])


def test_a_report_without_report_type_is_still_read() -> None:
    result = _bounce(
        "From: postmaster@hud.example\nSubject: Delivery Report (failure) for z@example.uk\n"
        'Content-Type: multipart/report; boundary="r"\n\n--r\nContent-Type: text/plain\n\nFailed.\n'
        "--r\nContent-Type: message/delivery-status\n\nFinal-Recipient: rfc822;z@example.uk\nAction: failed\n"
        "Status: 5.0.0\n--r--\n",
    )
    assert (result["type"], result["recipients"]) == ("failed", ["z@example.uk"])


def test_feedback_reports_are_not_bounces() -> None:
    result = _bounce("From: abuse@isp.example\nSubject: complaint\n\nbody", report_type="feedback-report")
    assert (result["is_bounce"], result["type"]) == (False, "feedback_report")


_ABUSE_REPORT = (
    "From: fbl@isp.example\nSubject: complaint\nContent-Type: multipart/{outer}; boundary=b\n\n"
    "--b\nContent-Type: text/plain\n\nA complaint.\n"
    "--b\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\n"
    "Original-Rcpt-To: rfc822;Complainer@Example.org\nOriginal-Rcpt-To: <second@example.org>\n"
    "User-Agent: FBL/1.0\n"
    "--b\nContent-Type: message/rfc822\n\nTo: someone@example.net\nFrom: us@example.com\n\nhello\n--b--\n"
)


def test_feedback_reports_name_the_complaining_recipients_wherever_the_report_part_is() -> None:
    # A feedback-report part counts under a multipart/mixed too, or a multipart/report that mislabels
    # its report-type; the recipients are the Original-Rcpt-To addresses, not those of the returned message.
    for outer in ("mixed", "report; report-type=delivery-status"):
        result = _bounce(_ABUSE_REPORT.format(outer=outer), mail_from="fbl@isp.example")
        assert (result["is_bounce"], result["type"]) == (False, "feedback_report")
        assert result["recipients"] == ["complainer@example.org", "second@example.org"]


def test_plain_bounces_need_an_automatic_sender_and_evidence() -> None:
    assert _plain("failure notice", "x", mail_from="x@example.com")["is_bounce"]
    assert _plain("Undeliverable: hello", "x", sender="postmaster@example.com", mail_from="x@example.com")[
        "is_bounce"
    ]
    assert _plain("Mail delivery failed", "x", sender="anyone@example.com")["is_bounce"]  # null sender
    assert not _plain("Mail delivery failed", "x", sender="anyone@example.com", mail_from="a@example.com")[
        "is_bounce"
    ]
    assert not _plain("Weekly statistics", "nothing failed")["is_bounce"]


def test_x_failed_recipients_names_the_failed_addresses() -> None:
    result = _plain(
        "Weekly statistics",
        "A message that you sent could not be delivered.\n\n  other@example.org\n",
        extra="X-Failed-Recipients: gone@example.org, also@example.net\n",
    )
    assert result["recipients"] == ["gone@example.org", "also@example.net"]


def test_reason_comes_from_the_words_near_the_address() -> None:
    text = (
        "I'm afraid I wasn't able to deliver your message.\n\n<full@example.net>:\n"
        "552 Mailbox quota exceeded\n"
    )
    detail = _plain("failure notice", text)["recipients_detail"]
    assert detail == [
        {"email": "full@example.net", "status": None, "kind": "permanent", "reason": "mailbox_full"}
    ]


def test_flufl_bounce_is_given_only_small_messages() -> None:
    parts = "".join(f"--b\nContent-Type: text/plain\n\npart {n}\n" for n in range(MAX_FLUFL_PARTS + 1))
    big = parse_mime(f'Content-Type: multipart/mixed; boundary="b"\n\n{parts}--b--\n'.encode())
    small = parse_mime(b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n\nx\n--b--\n')
    assert not _small_enough_for_flufl(big)
    assert _small_enough_for_flufl(small)


def test_no_tree_still_gives_a_result() -> None:
    headers = [["From", "MAILER-DAEMON@x.example"], ["Subject", "Undeliverable: hi"]]
    result = detect_bounce(
        headers, None, mail_from="", text="<gone@example.org>: 550 5.1.1 unknown user", report_type=None
    )
    assert result["recipients"] == ["gone@example.org"]


def test_a_plain_text_delay_warning_is_a_delay_notice() -> None:
    text = (
        "This message was created automatically by mail delivery software.\n\nA message that you sent has "
        "not yet been delivered to one or more of\nits recipients after 2 days.\n\nThe message has not yet "
        "been delivered to the following addresses:\n\n  <late@example.com>\n    connection failed\n\n"
        "No action is required on your part. Delivery attempts will continue for some time.\n"
    )
    result = _plain("Warning: message delayed 2 days", text)
    assert (result["is_bounce"], result["type"], result["recipients"]) == (False, "delayed", [])
    assert [(d["email"], d["kind"]) for d in result["recipients_detail"]] == [
        ("late@example.com", "transient")
    ]


def test_a_report_with_a_mangled_boundary_is_read_from_the_unsplit_body() -> None:
    result = _bounce(
        "From: MAILER-DAEMON@mx.example.com\nSubject: Undelivered Mail Returned to Sender\n"
        'Content-Type: multipart/report; report-type=delivery-status;\n\tboundary="b/x" Message-Id: <1@x>\n\n'
        "--b/x\nContent-Type: text/plain\n\nThe mail system\n\n"
        "--b/x\nContent-Type: message/delivery-status\n\n"
        "Reporting-MTA: dns; x\n\nFinal-Recipient: rfc822; gf@example.co.uk\nAction: failed\nStatus: 5.0.0\n"
        "Diagnostic-Code: smtp; 550 Probable Spam\n\n--b/x--\n",
    )
    assert result["recipients_detail"] == [
        {"email": "gf@example.co.uk", "status": "5.0.0", "kind": "permanent", "reason": "spam_blocked"}
    ]


def test_outlook_com_complaints_are_feedback_reports_naming_the_complainant() -> None:
    result = _bounce(
        "From: staff@hotmail.com\nSubject: complaint about message from 192.0.2.1\n"
        'Content-Type: multipart/mixed; boundary="c"\n\n'
        "--c\nContent-Type: message/rfc822\n\n"
        "X-HmXmrOriginalRecipient: Reader@outlook.example\nFrom: us@acme.example\nSubject: News\n\nHello\n"
        "--c--\n",
        mail_from="staff@hotmail.com",
    )
    assert result == {"is_bounce": False, "type": "feedback_report", "recipients": ["reader@outlook.example"],
                      "recipients_detail": []}  # fmt: skip


def test_a_forwarded_message_without_the_complaint_marker_is_no_complaint() -> None:
    result = _bounce(
        'From: a@example.org\nSubject: Fwd: News\nContent-Type: multipart/mixed; boundary="c"\n\n'
        "--c\nContent-Type: message/rfc822\n\nFrom: us@acme.example\nSubject: News\n\nHello\n--c--\n",
        mail_from="a@example.org",
    )
    assert result["type"] is None


def test_an_address_without_a_local_part_is_no_failed_recipient() -> None:
    # Sendmail can write "Final-Recipient: RFC822; @host" when it lost the local part; the text still
    # names the address that failed.
    result = _bounce(
        "From: Mail Delivery Subsystem <MAILER-DAEMON@mx.example.com>\n"
        "Subject: Returned mail: see transcript for details\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"\n\n'
        "--r\n\n   ----- The following addresses had permanent fatal errors -----\n<a@example.org>\n"
        "    (reason: 550 Host unknown)\n\n"
        "--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\n\n"
        "Final-Recipient: RFC822; @mx.example.org\nAction: failed\nStatus: 5.1.2\n--r--\n",
        text="   ----- The following addresses had permanent fatal errors -----\n<a@example.org>\n"
        "    (reason: 550 Host unknown)\n",
    )
    assert result["is_bounce"] is True
    assert result["recipients"] == ["a@example.org"]


SES_BOUNCE = (
    '{"notificationType":"Bounce","bounce":{"bounceType":"Permanent","bouncedRecipients":[{"emailAddress":'
    '"a@example.org","action":"failed","status":"5.1.1","diagnosticCode":"smtp; 550 5.1.1 user unknown"}]}}'
)


def test_amazon_ses_notifications_mailed_by_sns_are_read() -> None:
    result = _bounce(
        f"From: SES <no-reply@sns.amazonaws.com>\nSubject: AWS Notification Message\n\n{SES_BOUNCE}\n",
        mail_from="0101@us-west-2.amazonses.com",
        text=SES_BOUNCE,
    )
    assert result["is_bounce"] is True and result["recipients"] == ["a@example.org"]
    assert result["recipients_detail"] == [
        {"email": "a@example.org", "status": "5.1.1", "kind": "permanent", "reason": "user_unknown"}
    ]
    delivered = '{"notificationType":"Delivery","delivery":{"recipients":["a@example.org"]}}'
    receipt = _bounce(
        "From: no-reply@sns.amazonaws.com\nx-amz-sns-message-id: 1\n"
        f"Subject: AWS Notification Message\n\n{delivered}\n",
        mail_from="0101@us-west-2.amazonses.com",
        text=delivered,
    )
    assert receipt["is_bounce"] is False and receipt["type"] is None


def test_ses_json_quoted_by_a_person_is_no_bounce() -> None:
    result = _bounce(
        f"From: Customer <c@example.net>\nSubject: why did this bounce?\n\n{SES_BOUNCE}\n",
        mail_from="c@example.net",
        text=SES_BOUNCE,
    )
    assert result["is_bounce"] is False


def test_exim_mail_failure_subjects_are_bounce_subjects() -> None:
    result = _plain(
        "Mail failure - malformed recipient address",
        "A message that you sent contained one or more recipient addresses that were\n"
        "incorrectly constructed:\n\n"
        "  a@example.org <b@example.org>: malformed address: <b@example.org> may not follow a@example.org\n",
    )
    assert result["is_bounce"] is True


def test_addresses_only_in_the_returned_headers_are_not_failed_recipients() -> None:
    text = (
        "This message was created automatically by mail delivery software.\n"
        "A message that you sent could not be delivered to one or more of its recipients. "
        "This is a permanent error.\n\n"
        "a@example.org Invalid Address, ERROR_CODE :550, ERROR_CODE :5.1.1 <a@example.org>... User\n\n\n"
        "Received:from mail.example.com by mx.example.com\n\twith SMTP id 1; Fri, 12 Dec 2014 02:46:23\n"
        "Message-ID:<14a3e1b4b5a.10b1a4c5@example.net>\nDate:Fri, 12 Dec 2014 10:46:23 +0000\n"
        "From:Me <me@example.net>\nTo:<a@example.org>\n"
    )
    result = _plain("Undelivered Mail Returned to Sender", text)
    assert result["recipients"] == ["a@example.org"]


# Postfix without MIME: the report's fields written into the text, the returned headers after them.
PASTED_DELAY = (
    "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #\n\n"
    "Your message could not be delivered for more than 2 hour(s).\n"
    "It will be retried until it is 4 day(s) old.\n\n"
    "                   The mail system\n\n"
    "<a@example.org>: connect to\n    mx.example.org[192.0.2.2]:25: No route to host\n\n\n\n"
    "Reporting-MTA: dns; smtp.example.net\nX-Postfix-Sender: rfc822; me@example.net\n\n"
    "Final-Recipient: rfc822; a@example.org\nOriginal-Recipient: rfc822;a@example.org\n"
    "Action: delayed\nStatus: 4.4.1\nDiagnostic-Code: X-Postfix; connect to\n"
    "    mx.example.org[192.0.2.2]:25: No route to host\n\n\n\n"
    "Return-Path: <me@example.net>\nReceived: from me (unknown [203.0.113.2])\n"
    "\tby smtp.example.net (Postfix) with ESMTPSA id 22222222ee;\n\tThu, 29 Apr 2017 23:34:45 +0900\n"
    "MIME-Version: 1.0\nSubject: Hello\nFrom: me@example.net\nTo: a@example.org\n"
)


def test_a_report_pasted_into_a_plain_text_bounce_is_read() -> None:
    result = _plain("Delayed Mail (still being retried)", PASTED_DELAY)
    assert result["is_bounce"] is False and result["type"] == "delayed"
    assert [(d["email"], d["kind"], d["status"]) for d in result["recipients_detail"]] == [
        ("a@example.org", "transient", "4.4.1")
    ]
    failed = _plain("Returned mail", PASTED_DELAY.replace("delayed", "failed").replace("4.4.1", "5.1.1"))
    assert failed["is_bounce"] is True and failed["recipients_detail"][0]["status"] == "5.1.1"


def test_a_report_pasted_by_a_person_is_no_bounce() -> None:
    result = _plain("why?", PASTED_DELAY, sender="Customer <c@example.net>", mail_from="c@example.net")
    assert result["is_bounce"] is False and result["type"] is None


def test_flufl_addresses_are_kept_to_those_the_words_name() -> None:
    words = "Delivery to <a@example.org> failed: user unknown. Also b@example.org."
    many = [f"x{i}@example.net" for i in range(5_000)]
    assert _named_in(words, [*many, "b@example.org", "a@example.org"]) == ["b@example.org", "a@example.org"]
    assert _named_in("no address here", ["c@example.org"]) == ["c@example.org"]  # none named: all kept
