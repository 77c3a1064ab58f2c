from __future__ import annotations

import pytest

from inbound.ticket.reply_strip import MAX_SCANNED_CHARS, MAX_SCANNED_LINES, Reply, split_reply, strip_reply


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


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "Hei\n\nDen 12. mai 2026 kl. 10:20 skrev Ola <ola@example.no>:\n\nGammel tekst\n",
            "Hei",
            id="norwegian skrev",
        ),
        pytest.param(
            "Kiitos\n\npe 20. lokakuuta 2017 klo 17.50 John Coe\n<j@example.fi> kirjoitti:\n\nVanha\n",
            "Kiitos",
            id="finnish, wrapped",
        ),
        pytest.param(
            "Привет\n\nср, 30 апр. 2025 г. в 15:19, John Doe <doe@example.com>:\n\nстарое\n",
            "Привет",
            id="russian date-first without a verb",
        ),
        pytest.param(
            "Dzięki\n\nW dniu 2.11.2026 o 10:20, Jan <jan@example.pl> napisał:\n\nstare\n",
            "Dzięki",
            id="polish",
        ),
        pytest.param(
            "Díky\n\nDne 2. 11. 2026 10:20 Jan <jan@example.cz> napsal(a):\n\nstaré\n", "Díky", id="czech"
        ),
        pytest.param(
            "好的\n\n2026年11月2日 10:20，张三 <z@example.cn> 写道：\n\n旧的\n", "好的", id="chinese"
        ),
        pytest.param(
            "Test reply\n\n2014-10-17 11:28 GMT+03:00 Postmaster <\npostmaster@example.org>:\n\nold\n",
            "Test reply",
            id="date-first wrapped",
        ),
        pytest.param("Test reply\n\n---- John Smith wrote ----\n\nold\n", "Test reply", id="dashed"),
        pytest.param(
            "Tack\nFrån: Anna [mailto:a@example.se]\nSkickat: den 26 augusti 2015 14:45\nTill: Leif\n"
            "Ämne: RE: Vecka 36\n\ngammalt\n",
            "Tack",
            id="swedish outlook block",
        ),
        pytest.param(
            "Thanks\n\n-----Oprindelig meddelelse-----\n\nold\n", "Thanks", id="danish original message"
        ),
        pytest.param(
            "reply On Wed, Apr 4, 2012 at 3:59 PM, bob@example.com wrote:\n> old\n",
            "reply",
            id="attribution sharing the reply's line",
        ),
        pytest.param(
            "Blah\n\nOn Monday, 24 September, 2012 at 3:46 PM, bob wrote:\n\n> [Ticket #50]\n"
            "> View ticket (http://example.com/action\n_nonce=3dd518)\n>\n",
            "Blah",
            id="a quoted line's wrapped tail lost its >",
        ),
        pytest.param(
            "Visit us...\n>>> >>>  http://www.example.com <<<\nVisit the site\n",
            "Visit us...\n>>> >>>  http://www.example.com <<<\nVisit the site",
            id=">>> and <<< kept",
        ),
        pytest.param(
            "Thanks\n\nOn Tue, 3 Nov 2026, Bob <bob@example.com> wrote:\n",
            "Thanks",
            id="attribution left behind after its quote was removed",
        ),
        pytest.param(
            "Answer\n\n-Abhishek\n\n__\nriak-users mailing list\nriak-users@lists.example.com\n"
            "http://lists.example.com/mailman/listinfo/riak-users\n",
            "Answer\n\n-Abhishek",
            id="mailing-list footer",
        ),
    ],
)
def test_strip_reply_in_more_languages_and_shapes(text: str, expected: str) -> None:
    assert strip_reply(text) == expected


def test_the_signature_is_returned_beside_the_reply() -> None:
    reply = split_reply("Text.\n\n-- \nAlice\nACME Corp\n\nOn Mon, Bob <b@example.com> wrote:\n> old\n")
    assert reply == Reply("Text.", "Alice\nACME Corp")
    assert split_reply("Hello\n\nSent from my iPhone\n\nold history\n") == Reply(
        "Hello", "Sent from my iPhone"
    )
    assert split_reply("Hello\n") == Reply("Hello", None)


def test_the_scan_is_bounded() -> None:
    hostile = "> q\n" * 1_000_000 + "On Mon, Bob <b@example.com> wrote:\n"
    assert strip_reply("New\n" + hostile) == "New"
    text = "a\n" * MAX_SCANNED_CHARS
    assert len(strip_reply(text)) <= len(text)  # the unread rest is kept, never more


# Attributions as Gmail, Apple Mail, Thunderbird and Yahoo write them in the languages they ship, each
# followed by history that is not ">"-quoted (the harder case: only the attribution tells where it starts).
_CLIENT_ATTRIBUTIONS = [
    "On Mon, Jan 8, 2024 at 10:00 AM Ann Lee <ann@example.com> wrote:",
    "Am Mo., 8. Jan. 2024 um 10:00 Uhr schrieb Ann Lee <ann@example.com>:",
    "Am 08.01.2024 um 10:00 schrieb Ann Lee:",
    "Ann Lee <ann@example.com> schrieb:",
    "Le lun. 8 janv. 2024 à 10:00, Ann Lee <ann@example.com> a écrit :",
    "El lun, 8 ene 2024 a las 10:00, Ann Lee (<ann@example.com>) escribió:",
    "El 08/01/2024 a les 10:00, Ann Lee <ann@example.com> ha escrit:",
    "El dl., 8 de gen. 2024 a les 10:00, Ann Lee (<ann@example.com>) va escriure:",
    "Il giorno lun 8 gen 2024 alle ore 10:00 Ann Lee <ann@example.com> ha scritto:",
    "Em seg., 8 de jan. de 2024 às 10:00, Ann Lee <ann@example.com> escreveu:",
    "Op ma 8 jan 2024 om 10:00 schreef Ann Lee <ann@example.com>:",
    "Den mån 8 jan. 2024 kl 10:00 skrev Ann Lee <ann@example.com>:",
    "man. 8. jan. 2024 kl. 10:00 skrev Ann Lee <ann@example.com>:",
    "tir. 18. apr. 2017 kl. 13:09 skrev Ann Lee <ann@example.com>:",
    "ma 8.1.2024 klo 10.00 Ann Lee (ann@example.com) kirjoitti:",
    "W dniu 2024-01-08 10:00, ann@example.com pisze:",
    "Dnia 8 stycznia 2024 10:00 Ann Lee <ann@example.com> napisał(a):",
    "po 8. 1. 2024 v 10:00 odesílatel Ann Lee <ann@example.com> napsal:",
    "po 8. 1. 2024 o 10:00 Ann Lee <ann@example.com> napísal(a):",
    "pon, 8. sij 2024. u 10:00 Ann Lee <ann@example.com> napisao je:",
    "пн, 8 янв. 2024 г. в 10:00, Ann Lee <ann@example.com>:",
    "08.01.2024 10:00, Ann Lee <ann@example.com> пишет:",
    "пн, 8 січ. 2024 р. о 10:00 Ann Lee <ann@example.com> пише:",
    "пн, 8.01.2024 г. в 10:00 ч. Ann Lee <ann@example.com> написа:",
    "8 Oca 2024 Pzt, saat 10:00 tarihinde Ann Lee <ann@example.com> şunu yazdı:",
    "Στις Δευ 8 Ιαν 2024 στις 10:00, ο/η Ann Lee <ann@example.com> έγραψε:",
    "Ann Lee <ann@example.com> ezt írta (időpont: 2024. jan. 8., H, 10:00):",
    "2024-01-08, pr, 10:00 Ann Lee <ann@example.com> rašė:",
    "E, 8. jaan 2024 kell 10:00 Ann Lee <ann@example.com> kirjutas:",
    "Pada tanggal Sen, 8 Jan 2024 pukul 10.00 Ann Lee <ann@example.com> menulis:",
    "Vào Th 2, 8 thg 1, 2024 vào lúc 10:00 Ann Lee <ann@example.com> đã viết:",
    "在 2016年11月8日，下午2:23，Ann Lee <ann@example.com> 写道：",
    "Ann Lee <ann@example.com> 于2024年1月8日周一 10:00写道：",
    "Ann Lee <ann@example.com> 於 2024年1月8日 週一 上午10:00寫道：",
    "2016/11/08 14:26、Ann Lee <ann@example.com> のメッセージ:",
    "2016. 11. 8. 오후 12:39 Ann Lee <ann@example.com> 작성:",
    "2024년 1월 8일 (월) 오전 10:00, Ann Lee <ann@example.com>님이 작성:",
]


@pytest.mark.parametrize("attribution", _CLIENT_ATTRIBUTIONS)
def test_client_attributions_end_the_reply(attribution: str) -> None:
    text = f"Thanks, that works.\n\n{attribution}\n\nThe earlier message.\nSecond line of it.\n"
    assert strip_reply(text) == "Thanks, that works."
    quoted = f"Thanks, that works.\n\n{attribution}\n> The earlier message.\n"
    assert strip_reply(quoted) == "Thanks, that works."


@pytest.mark.parametrize(
    "line",
    [
        "I told bob@example.com what you wrote:",  # no date, no bracketed address
        "Please write to support@example.com:",
        "The 2024-01-08 export was sent to ops@example.com and failed",  # no colon at its end
    ],
)
def test_sentences_with_an_address_stay_text(line: str) -> None:
    text = f"Hello,\n{line}\nMore of my own text.\n"
    assert "More of my own text." in strip_reply(text)


def test_header_block_with_nothing_above_heads_the_text_below_it() -> None:
    body = (
        "From: Ola Nordmann <ola@example.org>\n"
        "Sent: 3 March 2025 10:00\n"
        "To: Support <support@example.com>\n"
        "Subject: Printer\n"
        "\n"
        "The printer on floor 2 is jammed again.\n"
        "\n"
        "From: Support <support@example.com>\n"
        "Sent: 2 March 2025 09:00\n"
        "To: Ola Nordmann <ola@example.org>\n"
        "Subject: Printer\n"
        "\n"
        "Is it working now?\n"
    )
    assert strip_reply(body) == "The printer on floor 2 is jammed again."


def test_header_block_below_new_text_is_still_history() -> None:
    body = "Thanks!\n\nFrom: A <a@example.org>\nSent: today\nTo: B <b@example.org>\nSubject: x\n\nOld text\n"
    assert strip_reply(body) == "Thanks!"


def test_text_beyond_the_scan_limits_is_kept_not_dropped() -> None:
    """The scan is bounded; a long reply with no history in reach keeps its unread rest."""
    long_lines = "\n".join(f"log line {i}: " + "x" * 60 for i in range(6_000))  # ~450 KB
    assert len(long_lines) > MAX_SCANNED_CHARS
    assert split_reply(long_lines).text == long_lines
    many_lines = "\n".join(f"row {i}" for i in range(MAX_SCANNED_LINES + 5_000))
    assert split_reply(many_lines).text == many_lines
    one_long_line = "y" * (MAX_SCANNED_CHARS + 10)
    assert split_reply(one_long_line).text == one_long_line
    # History inside the scanned part still ends the reply there.
    history = "Thanks!\n\n-----Original Message-----\nFrom: Bob <bob@example.com>\n" + long_lines
    assert split_reply(history).text == "Thanks!"
    # A scan that runs out inside quoted history does not bring the rest of the history back.
    deep_quote = "Thanks!\n" + "> " + "quoted text " * 10 + "\n" * 1 + ("> more\n" * 60_000)
    assert split_reply(deep_quote).text == "Thanks!"
