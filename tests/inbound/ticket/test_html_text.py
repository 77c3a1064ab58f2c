from __future__ import annotations

from inbound.ticket.html_text import html_to_text


def test_paragraphs_lines_and_lists() -> None:
    markup = "<p>Dear support,</p><div>line one<br>line two</div><ul><li>first</li><li>second</li></ul>"
    assert html_to_text(markup) == "Dear support,\n\nline one\nline two\n\n- first\n- second"


def test_entities_and_whitespace() -> None:
    assert html_to_text("<p>a&nbsp;&amp;\n   b &lt;c&gt; &#8364;5</p>") == "a & b <c> €5"


def test_head_script_style_and_comments_are_dropped() -> None:
    markup = (
        "<html><head><title>Title</title><style>p{color:red}</style></head>"
        "<body><script>alert(1)</script><!-- hidden --><p>Shown</p></body></html>"
    )
    assert html_to_text(markup) == "Shown"


def test_table_cells_are_separated() -> None:
    assert html_to_text("<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>") == "a b\nc"


def test_blockquotes_become_quoted_lines() -> None:
    markup = "<div>New text</div><blockquote>old<br>text<blockquote>older</blockquote></blockquote>after"
    assert html_to_text(markup) == "New text\n\n> old\n> text\n\n> > older\n\nafter"


def test_malformed_markup_keeps_its_text() -> None:
    assert html_to_text("a < b and <unclosed") == "a < b and <unclosed"
    assert html_to_text("<p>open comment <!-- never closed <p>lost</p>") == "open comment"
    assert html_to_text("</blockquote>stray end tag") == "stray end tag"


def test_pathological_markup_is_processed_whole() -> None:
    assert html_to_text("<" * 100_000) == "<" * 100_000
    assert html_to_text("<!--" * 50_000) == ""
    assert html_to_text("<a " * 50_000).startswith("<a <a")
    assert html_to_text("<script>" + "x" * 100_000) == ""
