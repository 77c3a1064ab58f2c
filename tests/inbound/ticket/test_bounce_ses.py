from __future__ import annotations

import json

from inbound.ticket.bounce_ses import MAX_JSON_CHARS, MAX_RECIPIENTS, read_ses_notification

BOUNCE = {
    "notificationType": "Bounce",
    "bounce": {
        "bounceType": "Permanent",
        "bouncedRecipients": [
            {"emailAddress": "a@example.org", "action": "failed", "status": "5.1.1",
             "diagnosticCode": "smtp; 550 5.1.1 user unknown"},
        ],
    },
}  # fmt: skip


def test_an_sns_envelope_carries_the_ses_bounce_as_a_string() -> None:
    body = json.dumps({"Type": "Notification", "Message": json.dumps(BOUNCE)}, indent=2)
    notification = read_ses_notification(body + "\n--\nIf you wish to stop receiving notifications ...\n")
    assert notification is not None and notification.kind == "Bounce"
    (record,) = notification.records
    assert (record.email, record.action, record.status) == ("a@example.org", "failed", "5.1.1")
    assert record.diagnostic == "smtp; 550 5.1.1 user unknown"


def test_raw_newlines_inside_strings_are_tolerated() -> None:
    # SNS folds long lines of the JSON it mails, inside string values too.
    body = json.dumps(BOUNCE).replace("user unknown", "user\n unknown")
    notification = read_ses_notification(body)
    assert notification is not None and notification.records[0].email == "a@example.org"


def test_deliveries_and_complaints_name_their_recipients() -> None:
    delivery = read_ses_notification(
        json.dumps({"notificationType": "Delivery", "delivery": {"recipients": ["b@example.org"]}})
    )
    assert delivery is not None and [(r.email, r.action) for r in delivery.records] == [
        ("b@example.org", "delivered")
    ]
    complaint = read_ses_notification(
        json.dumps(
            {
                "notificationType": "Complaint",
                "complaint": {"complainedRecipients": [{"emailAddress": "c@x.org"}]},
            }
        )
    )
    assert complaint is not None and complaint.kind == "Complaint" and complaint.records[0].email == "c@x.org"


def test_anything_else_is_no_notification() -> None:
    assert read_ses_notification("Hello, this is no JSON at all") is None
    assert read_ses_notification('{"notificationType": "Unknown"}') is None
    assert read_ses_notification('{"notificationType": "Bounce", "bounce": [1, 2]}') is not None  # no crash
    assert read_ses_notification("[" * 100_000 + "]" * 100_000) is None  # too deep for the parser: refused
    assert read_ses_notification("{" + '"a": [' * 50_000 + "]" * 50_000 + "}") is None


def test_reading_is_bounded() -> None:
    many = {"notificationType": "Bounce", "bounce": {"bouncedRecipients": [
        {"emailAddress": f"u{i}@example.org"} for i in range(MAX_RECIPIENTS + 50)]}}  # fmt: skip
    notification = read_ses_notification(json.dumps(many))
    assert notification is not None and len(notification.records) == MAX_RECIPIENTS
    padded = json.dumps(BOUNCE) + " " * MAX_JSON_CHARS + "}"  # the closing brace lies past the limit
    assert read_ses_notification(" " * MAX_JSON_CHARS + json.dumps(BOUNCE)) is None
    assert read_ses_notification(padded) is not None
