from __future__ import annotations

import pytest

from inbound.ticket.reply_strip import strip_reply


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "Thanks!\n\nOn Mon, Nov 2, 2026 at 10:20 AM Acme Support <\nsupport@acme.example> wrote:\n\n"
            "> old question\n> more\n",
            "Thanks!",
            id="gmail attribution wrapped over two lines",
        ),
        pytest.param(
            "Sure.\n\nAm 02.11.2026 um 10:20 schrieb Acme Support <support@acme.example>:\n> Frage\n",
            "Sure.",
            id="german attribution",
        ),
        pytest.param(
            "Le lun. 2 nov. 2026 à 10:20, Acme <support@acme.example> a écrit :\n> question\n\nréponse",
            "réponse",
            id="bottom-posted after a french attribution",
        ),
        pytest.param(
            "Answer one.\n\n> second question?\n\nAnswer two.\n",
            "Answer one.\n\nAnswer two.",
            id="inline replies keep every answer",
        ),
        pytest.param(
            "New text.\n\nOn Mon, 2 Nov 2026, Acme wrote:\nunquoted history as Apple Mail sends it\n",
            "New text.",
            id="attribution before unquoted history",
        ),
        pytest.param(
            "Fixed, thanks.\n\n________________________________\nFrom: Acme Support <support@acme.example>\n"
            "Sent: Monday, November 2, 2026 10:20 AM\nTo: Alice\nSubject: RE: printer\n\nold text\n",
            "Fixed, thanks.",
            id="outlook header block after a rule",
        ),
        pytest.param(
            "Yes.\n\n-----Original Message-----\nFrom: Sales\nSubject: renewal\n\nold\n",
            "Yes.",
            id="outlook original message separator",
        ),
        pytest.param(
            "Danke.\n\nVon: Acme <support@acme.example>\nGesendet: Montag, 2. November 2026\nAn: Jörg\n"
            "Betreff: Rechnung\n\nalt\n",
            "Danke.",
            id="german outlook header block",
        ),
        pytest.param("Text.\n\n-- \nAlice\nACME Corp\n", "Text.", id="signature delimiter"),
        pytest.param("Text.\n--\nAlice\n", "Text.", id="signature delimiter without its space"),
        pytest.param("Text.\n\nSent from my iPhone\n", "Text.", id="mobile signature"),
        pytest.param("> only a quote\n> nothing new\n", "", id="nothing new"),
        pytest.param(
            "FYI\n\n---------- Forwarded message ---------\nFrom: Vendor <v@vendor.example>\n"
            "Date: Mon, 2 Nov 2026\nSubject: Invoice\nTo: Erin\n\nInvoice text\n",
            "FYI\n\n---------- Forwarded message ---------\nFrom: Vendor <v@vendor.example>\n"
            "Date: Mon, 2 Nov 2026\nSubject: Invoice\nTo: Erin\n\nInvoice text",
            id="a forwarded message is kept whole: it is what the sender wants read",
        ),
        pytest.param(
            "On Monday we will replace the printer.\nFrom: the facilities team\n",
            "On Monday we will replace the printer.\nFrom: the facilities team",
            id="ordinary sentences that look like markers",
        ),
        pytest.param("\n\n  Hello  \n\n", "  Hello", id="blank lines trimmed"),
    ],
)
def test_strip_reply(text: str, expected: str) -> None:
    assert strip_reply(text) == expected
