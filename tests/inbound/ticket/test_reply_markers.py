from __future__ import annotations

import pytest

from inbound.ticket.reply_markers import (
    attribution_end,
    inline_attribution_start,
    is_forward_marker,
    is_original_message,
    starts_header_block,
    starts_list_footer,
)


@pytest.mark.parametrize(
    ("text", "end"),
    [
        ("On Mon, 2 Nov 2026, Alice <a@example.com> wrote:", 1),
        ("Am 02.11.2026 schrieb Alice <a@example.com>:", 1),
        ("Le 2 nov. 2026 à 10:20, Alice <a@example.com> a écrit :", 1),
        ('02.04.2012 14:20 пользователь "bob@example.org" <\nbob@example.org> написал:', 2),
        ("On Tue, Apr 11, 2017 at 10:07 PM John Smith\n\n<\nmailto:John Smith <js@example.com>\n> wrote:", 5),
        ("------On 12/29/1987 17:32 PM, Julius Caesar wrote-----", 1),
        ("Op 17-feb.-2015, om 13:18 heeft Julius Caesar <p@rome.example> het volgende geschreven:", 1),
        ("Vào 14:24 8 tháng 6, 2017, Hùng <h@example.vn> đã viết:", 1),
    ],
)
def test_attributions(text: str, end: int) -> None:
    assert attribution_end(text.split("\n"), 0) == end


@pytest.mark.parametrize(
    "text",
    [
        "On Monday we will replace the printer.",
        "On my side, I sent:",  # "sent" needs a date or an address
        "> On Mon, 2 Nov 2026, Alice <a@example.com> wrote:",  # quoted: part of the history itself
        "Here is what I wrote:",
        "On 2 May 2026 we sent it to bob@example.com:",  # a sentence: no bracketed address
        "On\n\n\n\nwrote:",
    ],
)
def test_not_attributions(text: str) -> None:
    assert attribution_end(text.split("\n"), 0) is None


def test_header_blocks() -> None:
    assert starts_header_block(["From: a@example.com", "Sent: Monday", "To: b@example.com", "Subject: x"], 0)
    assert starts_header_block(["De : Alice", "Envoyé : lundi", "À : Bob"], 0)
    assert starts_header_block(["От: Alice", "Отправлено: 26 июня", "Кому: Alex"], 0)
    assert starts_header_block(["Date: Wed, 16 May 2012 00:15:02 -0600", "To: k@example.com"], 0)
    assert starts_header_block(["From: bob@example.com Date: Thu, 24 Mar 2016 08:07:12 -0700", "Quoted"], 0)
    assert not starts_header_block(["From: the facilities team", "We will replace the printer."], 0)
    assert not starts_header_block(["From: the team To: everyone", "We will replace the printer."], 0)
    assert not starts_header_block(["Date: tomorrow", "To: everyone"], 0)


def test_separators_forwards_and_footers() -> None:
    assert is_original_message("-----Original Message-----")
    assert is_original_message("-------- Oprindelig besked --------")
    assert not is_original_message("Original Message")
    assert is_forward_marker("---------- Forwarded message ----------")
    assert is_forward_marker("Begin forwarded message:")
    assert starts_list_footer(["__", "riak-users mailing list", "riak@example.com"], 0)
    assert not starts_list_footer(["__", "Regards"], 0)


def test_inline_attribution() -> None:
    assert inline_attribution_start("reply On Wed, Apr 4, 2012 at 3:59 PM, bob@example.com wrote:") == 6
    assert inline_attribution_start("On Wed, Apr 4, 2012 at 3:59 PM, bob@example.com wrote:") is None
    assert inline_attribution_start("I wrote: on Monday") is None
