from __future__ import annotations

import time

import pytest

from inbound.ticket.html_reply import MAX_HTML_CHARS, strip_html_reply

ATTRIBUTION = "On 11-Apr-2011, at 6:54 PM, Bob &lt;bob@example.com&gt; wrote:"


@pytest.mark.parametrize(
    ("markup", "text"),
    [
        pytest.param(
            f'<div dir="ltr">Thanks!</div><div class="gmail_quote">'
            f'<div class="gmail_attr">{ATTRIBUTION}</div>'
            '<blockquote class="gmail_quote">old</blockquote></div>',
            "Thanks!",
            id="gmail",
        ),
        pytest.param(
            '<div>Thanks!</div><div id="divRplyFwdMsg"><b>From:</b> Bob</div><div>old</div>',
            "Thanks!",
            id="outlook divRplyFwdMsg",
        ),
        pytest.param(
            '<p>Thanks!</p><div style="border:none;border-top:solid #B5C4DF 1.0pt"><p>From: Bob</p></div>'
            "<p>old</p>",
            "Thanks!",
            id="outlook 2010 border",
        ),
        pytest.param(
            '<p>Thanks!</p><div class="moz-cite-prefix">On Mon, Bob wrote:</div>'
            '<blockquote type="cite">old</blockquote>',
            "Thanks!",
            id="thunderbird",
        ),
        pytest.param(
            '<div>Thanks!</div><div class="yahoo_quoted"><div>On Monday, Bob wrote:</div>old</div>',
            "Thanks!",
            id="yahoo",
        ),
        pytest.param(
            '<div>Thanks!</div><blockquote type="cite"><div>old</div></blockquote>',
            "Thanks!",
            id="apple mail",
        ),
        pytest.param(
            f"Reply<blockquote>Regular</blockquote><div>{ATTRIBUTION}</div><blockquote>old</blockquote>",
            "Reply\nRegular",
            id="a blockquote before the attribution is the sender's",
        ),
        pytest.param(
            "<div><div>message</div><blockquote>Quote</blockquote></div><div>disclaimer</div>",
            "message\ndisclaimer",
            id="the last blockquote goes, what follows it stays",
        ),
        pytest.param(
            "<div>message<br><div><hr>From: bob@example.com<br>Date: Fri, 23 Mar 2012<br>To: rob@example.com"
            "<br>Subject: Hi<br><br>text</div></div>",
            "message",
            id="header block in the text",
        ),
        pytest.param(
            '<div>FYI</div><div class="gmail_quote">---------- Forwarded message ---------<br>From: Bob '
            "&lt;bob@example.com&gt;<br>Date: Mon<br>Subject: Invoice<br>To: me@example.com<br><br>"
            "Invoice</div>",
            "FYI\n---------- Forwarded message ---------\nFrom: Bob <bob@example.com>\nDate: Mon\n"
            "Subject: Invoice\nTo: me@example.com\nInvoice",
            id="a forward is kept whole",
        ),
    ],
)
def test_strip_html_reply(markup: str, text: str) -> None:
    assert strip_html_reply(markup).text == text


def test_open_elements_are_closed() -> None:
    result = strip_html_reply(f"<html><body><div><p>Thanks!</p><div>{ATTRIBUTION}</div><div>old</div>")
    assert result.html == "<html><body><div><p>Thanks!</p></div></body></html>"


def test_hostile_markup_costs_little() -> None:
    hostile = [
        '<a "' * 300_000,
        "<div>" * 300_000,
        "<!--" * 300_000,
        '<div class="gmail_quote">' * 100_000,
        "<blockquote>" * 200_000,
        "gmail_quote " * 100_000,
        "<div " + "class=gmail_quote " * 60_000,
        "<blockquote " + "class=x " * 130_000,
    ]
    started = time.process_time()
    for markup in hostile:
        assert len(strip_html_reply(markup).html) <= MAX_HTML_CHARS + 512 * len("</blockquote>")
    assert (
        time.process_time() - started < 10.0
    )  # measured ~2 s for all eight together; generous for a busy machine


def test_marked_header_with_no_text_before_it_heads_the_reply() -> None:
    header = (
        '<div style="border:none;border-top:solid #E1E1E1 1.0pt">'
        "<p><b>From:</b> Ola<br><b>Sent:</b> today<br>"
        "<b>To:</b> Support<br><b>Subject:</b> FW: Printer</p></div>"
    )
    markup = (
        f"<html><body><p>&nbsp;</p>{header}<p>The printer is jammed again.</p>"
        f"{header.replace('FW: Printer', 'Printer')}<p>Is it working now?</p></body></html>"
    )
    reply = strip_html_reply(markup)
    assert reply.text == "The printer is jammed again."
    assert "Is it working now?" not in reply.html


def test_marked_header_after_new_text_is_still_history() -> None:
    markup = (
        "<p>Thanks!</p>"
        '<div id="divRplyFwdMsg"><p><b>From:</b> A<br><b>Sent:</b> today</p></div><p>Old text</p>'
    )
    assert strip_html_reply(markup).text == "Thanks!"
