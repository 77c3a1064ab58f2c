"""What the ticket of each fixture in fixtures/mail must contain.

Keys are ticket fields compared for equality, plus a few checks that are not plain equality:
``text_contains`` / ``text_excludes`` / ``html_contains`` (substrings), ``headers_contain`` (pairs), and
``attachments`` (one dict per attachment, in order: fields compared for equality, ``content`` the exact
decoded bytes, ``content_prefix`` their beginning).
"""

from __future__ import annotations

from typing import Any

from tests.inbound.ticket.corpus import SUPPORT

ALICE = {"name": "Alice Example", "email": "alice@example.com"}
ACME = [{"name": "Acme Support", "email": SUPPORT}]
BARE_SUPPORT = [{"name": None, "email": SUPPORT}]
OUT_OF_OFFICE = "I am out of the office until Monday and will reply when I am back.\n"
NOT_AUTOMATIC = {"auto_submitted": False, "auto_submitted_reason": None}
NO_BOUNCE = {"is_bounce": False, "type": None, "recipients": [], "recipients_detail": []}


def _failed(*details: tuple[str, str, str]) -> dict[str, Any]:
    """A bounce's expected `bounce` object from (email, status, reason) of permanently failed recipients."""
    return {
        "is_bounce": True,
        "type": "failed",
        "recipients": [email for email, _, _ in details],
        "recipients_detail": [
            {"email": email, "status": status, "kind": "permanent", "reason": reason}
            for email, status, reason in details
        ],
    }


# The well-known 43-byte transparent 1x1 GIF used by the related-parts fixture.
GIF_1X1 = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)

# Fixtures whose envelope sender is the null sender (bounces arrive with MAIL FROM:<>).
NULL_SENDER = frozenset(
    {"null-sender", "dsn-postfix-failed", "dsn-exchange-failed", "dsn-delayed", "bounce-exim-mailer-daemon",
     "bounce-qmail"}
)  # fmt: skip


def _automatic(reason: str, subject: str = "Out of Office: Printer on floor 3") -> dict[str, Any]:
    return {
        "subject": subject,
        "from": {"name": "Oscar Out", "email": "oscar@example.com"},
        "text": OUT_OF_OFFICE,
        "auto_submitted": True,
        "auto_submitted_reason": reason,
        "bounce": NO_BOUNCE,
    }


ENCODINGS: dict[str, dict[str, Any]] = {
    "plain-ascii": {
        "subject": "Printer on floor 3 is jammed",
        "from": ALICE,
        "to": ACME,
        "cc": [],
        "reply_to": [],
        "date": "2026-11-02T09:15:00Z",
        "message_id": "20261102091500.1234@mail.example.com",
        "in_reply_to": None,
        "references": [],
        "text": (
            "Hello,\n\nthe printer on floor 3 is jammed again. Could someone have a look?\n\nThanks,\nAlice\n"
        ),
        "html": None,
        "stripped_text_reply": (
            "Hello,\n\nthe printer on floor 3 is jammed again. Could someone have a look?\n\nThanks,\nAlice"
        ),
        "attachments": [],
        "bounce": NO_BOUNCE,
        "parse_error": None,
        **NOT_AUTOMATIC,
    },
    "utf8-8bit": {
        "subject": "Gerät defekt – bitte prüfen",
        "from": {"name": "Jörg Müller", "email": "joerg@example.de"},
        "date": "2026-11-03T08:00:00Z",
        "text_contains": ["Grüße aus München", "„Fehler 42“", "日本語も大丈夫です 👍"],
    },
    "iso-2022-jp": {
        "subject": "お問い合わせ：請求書について",
        "from": {"name": "山田太郎", "email": "taro@example.jp"},
        "date": "2026-11-04T00:30:00Z",
        "text": "いつもお世話になっております。\n請求書の件でご連絡しました。\n",
    },
    "koi8-r": {
        "subject": "Проблема с доступом",
        "from": {"name": "Иван Петров", "email": "ivan@example.ru"},
        "date": "2026-11-05T09:00:00Z",
        "text": "Здравствуйте!\nНе могу войти в личный кабинет.\n",
    },
    "windows-1252-qp": {
        "subject": "Invoice €100 – café",
        "text_contains": ["“Smart quotes” and € 100 for the café crème order.", "This line is long enough"],
    },
    "bogus-charset": {"subject": "Café order", "text": "Café crème, s'il vous plaît.\n"},
    "rfc2047-names": {
        "subject": "Résumé für Zoë",
        "from": {"name": "Renée d'Arc", "email": "renee@example.fr"},
        "to": [{"name": "山田", "email": "yamada@example.jp"}, *BARE_SUPPORT],
        "cc": [
            {"name": "Émile", "email": "emile@example.fr"},
            {"name": "François", "email": "francois@example.fr"},
        ],
    },
    "rfc2047-broken": {
        "subject": "Broken padding and missing end",
        "from": {"name": "Quoted Word", "email": "quoted@example.com"},
        "to": [{"name": "René", "email": "rene@example.com"}],
        "cc": [{"name": "é", "email": "garbage@example.com"}],
        "headers_contain": [["X-Broken", "=?utf-8?Z?not-an-encoding?="]],
    },
    "quoted-printable": {
        "date": "2026-11-08T14:00:00Z",
        "text": (
            "The formula is a=b+c and the result is naïve. This is a very long line that was soft-wrapped "
            "by the sender's client.\n"
        ),
    },
    "broken-base64": {
        "text": "Das Gerät läuft nicht.\n",
        "attachments": [
            {"filename": "report.txt", "content_type": "text/plain", "content": b"line one\nline two\n"}
        ],
    },
    "8bit-unlabelled-utf8": {"text": "Überweisung erhalten — danke!\n"},
    "8bit-unlabelled-latin1": {"text": "Die Überweisung über 50 € ist erledigt.\n"},
    "mislabelled-ascii": {"text": "Señor Núñez wrote in UTF-8 but his client said us-ascii.\n"},
    "hostile-charsets": {"text": "escape \\ud800 stays literal\nlone surrogate \ufffd replaced"},
    "smtputf8-address": {
        "from": {"name": "Jörg", "email": "jörg@exämple.de"},
        "message_id": "smtputf8@exämple.de",
    },
}

STRUCTURE: dict[str, dict[str, Any]] = {
    "multipart-alternative": {
        "text": "Where is order 1234?",
        "html_contains": ["<b>order 1234</b>"],
        "attachments": [],
    },
    "multipart-related-inline-images": {
        "text": "See the screenshot below.",
        "html_contains": ['<img src="cid:logo@acme">'],
        "attachments": [
            {
                "filename": "logo.png",
                "content_type": "image/png",
                "content_id": "logo@acme",
                "disposition": "inline",
                "truncated": False,
                "content_prefix": b"\x89PNG\r\n\x1a\n",
            },
            {
                "filename": "attachment-2.gif",
                "content_type": "image/gif",
                "content_id": "spacer",
                "disposition": "inline",
                "content": GIF_1X1,
            },
        ],
    },
    "hostile-filenames": {
        "text": "Files attached.",
        "attachments": [
            {"filename": "passwd", "content": b"root:x:0:0\n", "disposition": "attachment"},
            {"filename": "evil.dll", "content": b"MZ\x90\x00"},
            {"filename": "invoice.pdf", "content": b"%PDF-1.4 control\n"},
            {"filename": "€ rates 2026.pdf", "content": b"%PDF-1.4 rates\n"},
            {"filename": "a" * 251 + ".pdf", "content": b"%PDF-1.4 long\n"},
            {"filename": "htaccess", "content": b"Deny from all\n"},
            {"filename": "invoicefdp.exe", "content": b"MZ rtlo\n"},
            {"filename": "attachment-8.pdf", "content_type": "application/pdf"},
            {"filename": "_CON.txt"},
            {"filename": "attachment-10.bin", "content": b"\x00\x01\x02"},
            {"filename": "Übersicht.xlsx", "content": b"PK\x03\x04"},
        ],
    },
    "rfc2231-continuations": {
        "attachments": [
            {"filename": "日本語の.txt", "content": b"nihongo"},
            {"filename": "Übersicht März.pdf", "content": b"%PDF-1.4 8bit name"},
        ]
    },
    "forwarded-rfc822": {
        "subject": "Fwd: Invoice 2026-114 overdue",
        "text": "FYI, see the forwarded message.",
        "text_excludes": ["is overdue"],
        "attachments": [
            {
                "filename": "Invoice 2026-114 overdue.eml",
                "content_type": "message/rfc822",
                "content_prefix": b"From: Billing <billing@vendor.example>\r\n",
            }
        ],
    },
    "calendar-invite": {
        "text": "You are invited to the Quarterly review on 20 November.",
        "html_contains": ["<b>Quarterly review</b>"],
        "attachments": [
            {
                "filename": "attachment-1.ics",
                "content_type": "text/calendar",
                "content_prefix": b"BEGIN:VCALENDAR",
            },
            {
                "filename": "invite.ics",
                "content_type": "application/ics",
                "content_prefix": b"BEGIN:VCALENDAR",
            },
        ],
    },
    "winmail-dat": {
        "text": "Please find the contract draft attached.",
        "attachments": [
            {
                "filename": "winmail.dat",
                "content_type": "application/ms-tnef",
                "content_prefix": b"\x78\x9f\x3e\x22",
            }
        ],
    },
    "multipart-signed": {
        "text": "Please reset my password.",
        "attachments": [{"filename": "smime.p7s", "content_type": "application/pkcs7-signature", "size": 48}],
    },
    "apple-mail-mixed-inline": {
        "text": "Here is the photo:\nThe box arrived like this.",
        "attachments": [
            {
                "filename": "damage.png",
                "disposition": "inline",
                "content_id": None,
                "content_prefix": b"\x89PNG",
            }
        ],
    },
    "group-addresses": {
        "to": [],
        "cc": [{"name": None, "email": "kim@example.com"}, {"name": "Lee, Sam", "email": "sam@example.com"}],
        "reply_to": [{"name": "Judy Private", "email": "judy.private@example.org"}],
    },
}

REPLIES: dict[str, dict[str, Any]] = {
    "threading-reply": {
        "subject": "Re: [#4711] Printer on floor 3 is jammed",
        "message_id": "reply.2@mail.example.com",
        "in_reply_to": "ticket-4711.2@acme.helpdesk.example",
        "references": [
            "20261102091500.1234@mail.example.com",
            "ticket-4711.1@acme.helpdesk.example",
            "ticket-4711.2@acme.helpdesk.example",
        ],
        "date": "2026-11-03T07:30:00Z",
        "stripped_text_reply": "It works again, thank you!",
    },
    "gmail-reply": {
        "in_reply_to": "ticket-4711.3@acme.helpdesk.example",
        "text_contains": ["> Please switch the printer off and on again."],
        "stripped_text_reply": "Sounds good, I will try that tomorrow morning.",
    },
    "bottom-posted-reply": {"stripped_text_reply": "It is the LaserJet 4000.\n\nSince last Friday."},
    "outlook-reply": {"stripped_text_reply": "Thanks, that fixed it.\n\nBest regards,\nAlice"},
    "outlook-original-message": {"stripped_text_reply": "Yes, please renew for another year."},
    "outlook-reply-german": {"stripped_text_reply": "Vielen Dank für die schnelle Antwort."},
    "html-only": {
        "html_contains": ["<!DOCTYPE html>"],
        "text_contains": [
            "Dear support,",
            'the export fails with error "E42" & nothing else.',
            "- Step one\n- Step two",
        ],
        "text_excludes": ["alert(", "ignored title", "color: red"],
    },
    "gmail-html-reply": {
        "in_reply_to": "ticket-4715.1@acme.helpdesk.example",
        "text_contains": ["> Which format do you need for the export?"],
        "stripped_text_reply": "CSV would be perfect, thanks!",
    },
}

AUTOMATIC: dict[str, dict[str, Any]] = {
    "auto-submitted": _automatic("auto-submitted:auto-replied"),
    "precedence-bulk": _automatic("precedence:bulk", "Our November offers"),
    "precedence-junk": _automatic("precedence:junk", "You have won"),
    "precedence-list": _automatic("precedence:list", "[users] Weekly digest"),
    "precedence-auto-reply": _automatic("precedence:auto_reply"),
    "x-autoreply": _automatic("x-autoreply"),
    "x-autorespond": _automatic("x-autorespond"),
    "x-auto-response-suppress": _automatic("x-auto-response-suppress"),
    "list-id": _automatic("list-id", "[users] How do I export tickets?"),
    "list-unsubscribe": _automatic("list-unsubscribe", "Newsletter: what's new in November"),
    "null-sender": _automatic("null-sender", "Your parcel is on its way"),
    "mdn-read-receipt": {
        "auto_submitted": True,
        "auto_submitted_reason": "report:disposition-notification",
        "bounce": NO_BOUNCE,
        "attachments": [{"content_type": "message/disposition-notification", "filename": "attachment-1.txt"}],
    },
}

BOUNCES: dict[str, dict[str, Any]] = {
    "dsn-postfix-failed": {
        "from": {"name": "Mail Delivery System", "email": "MAILER-DAEMON@mx.acme.example"},
        "bounce": _failed(
            ("nobody@example.org", "5.1.1", "user_unknown"), ("gone@example.net", "5.1.1", "user_unknown")
        ),
        "auto_submitted": True,
        "auto_submitted_reason": "auto-submitted:auto-replied",
        "text_contains": ["could not\nbe delivered"],
        "attachments": [
            {"filename": "attachment-1.txt", "content_type": "message/delivery-status"},
            {
                "filename": "attachment-2.txt",
                "content_type": "text/rfc822-headers",
                "content_prefix": b"From: Acme Support",
            },
        ],
    },
    "dsn-exchange-failed": {
        "bounce": _failed(("jane@exchange.example.com", "5.1.10", "user_unknown")),
        "auto_submitted": True,
        "auto_submitted_reason": "bounce",
        "attachments": [
            {"filename": "attachment-1.txt", "content_type": "message/delivery-status"},
            {"filename": "Your ticket #4712.eml", "content_type": "message/rfc822"},
        ],
    },
    "dsn-delayed": {
        "bounce": {
            "is_bounce": False,
            "type": "delayed",
            "recipients": [],
            "recipients_detail": [
                {"email": "slow@example.org", "status": "4.4.7", "kind": "transient", "reason": "expired"}
            ],
        },
        "auto_submitted": True,
        "auto_submitted_reason": "report:delivery-status",
    },
    "bounce-exim-mailer-daemon": {
        "bounce": _failed(("nobody@example.org", "5.1.1", "user_unknown")),
        "auto_submitted_reason": "bounce",
    },
    "bounce-qmail": {
        "bounce": _failed(("nobody@example.net", "5.1.1", "user_unknown")),
        "auto_submitted_reason": "bounce",
    },
}

DEGENERATE: dict[str, dict[str, Any]] = {
    "huge-header-50k": {
        "subject": "Huge header",
        "text": "Body after a 50 KB header.\n",
        "parse_error": None,
    },
    "received-500": {"subject": "Long trip", "text": "This message went through 500 relays.\n"},
    "missing-from": {"from": None, "subject": "No sender", "text": "Who am I?\n"},
    "missing-date": {"date": None, "subject": "No date", "from": ALICE},
    "missing-message-id": {"message_id": None, "subject": "No id"},
    "missing-subject": {"subject": None, "text": "No subject line here.\n"},
    "no-body": {
        "subject": "Empty body",
        "text": None,
        "html": None,
        "stripped_text_reply": None,
        "attachments": [],
    },
    "headers-only": {"subject": "Only headers", "text": None, "parse_error": None},
    "bare-lf": {"subject": "Bare LF line endings", "text": "Line one\nLine two\n"},
    "mixed-line-endings": {"text": "CRLF line\nLF line\nCR line\nlast line\n"},
    "empty": {
        "headers": [],
        "subject": None,
        "text": None,
        "parse_error": "empty input: no header section and no body",
    },
    "binary-garbage": {
        "headers": [],
        "text": None,
        "attachments": [],
        "parse_error": "no header section: the input is not an RFC 5322 message",
    },
    "binary-after-trace-header": {
        "text": None,
        "from": None,
        "parse_error": "no header fields of its own: only trace fields precede non-header data",
    },
    "deep-nesting": {
        "subject": "Nested 100 deep",
        "from": ALICE,
        "text": None,
        # What lies below the nesting limit is kept whole, as one part.
        "attachments": [{"filename": "attachment-1.bin", "content_type": "multipart/mixed"}],
        "parse_error": "MIME structure nested deeper than 32 levels: the rest is kept unsplit",
    },
}

EXPECTED: dict[str, dict[str, Any]] = {
    **ENCODINGS,
    **STRUCTURE,
    **REPLIES,
    **AUTOMATIC,
    **BOUNCES,
    **DEGENERATE,
}
