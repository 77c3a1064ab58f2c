"""HTML → plain text for HTML-only mail.

A single linear tokenizer pass (no backtracking regexes: a hostile body of unclosed "<" or "<!--" stays
linear): scripts, styles and the head are dropped, block elements become line breaks, entities are
decoded, and text inside <blockquote> is prefixed with "> " so reply stripping recognises quoted history
the same way it does in plain-text mail.

The output is at most a small constant times the input: the quote prefix stops growing at
`MAX_QUOTE_PREFIX_DEPTH` levels (thousands of nested quotes would otherwise prefix every line with thousands
of "> "), and no line is emitted without text of its own.
"""

from __future__ import annotations

import html
import re

_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)"  # comment (an unclosed one runs to the end, consumed once)
    r"|<([/]?)([a-zA-Z][a-zA-Z0-9]*)\b[^<>]*>"  # start or end tag
    r"|<[!?][^<>]*>",  # doctype, processing instruction
    re.DOTALL,
)
_SKIPPED_ELEMENTS = frozenset({"script", "style", "head", "title", "template"})
# Elements that end a paragraph (a blank line follows) and those that only end a line.
_PARAGRAPH_ELEMENTS = frozenset(
    {"blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "ol", "p", "pre", "table", "ul"}
)
_LINE_ELEMENTS = frozenset(
    {
        "address", "article", "aside", "br", "caption", "center", "dd", "div", "dl", "dt", "fieldset",
        "figure", "footer", "form", "header", "li", "main", "nav", "section", "tr",
    }
)  # fmt: skip
_CELL_ELEMENTS = frozenset({"td", "th"})
MAX_QUOTE_PREFIX_DEPTH = 8
# The tokenizer steps through tags in Python (about a microsecond each): text is made from this much HTML
# at most. The HTML itself is delivered whole in the ticket's `html`.
MAX_HTML_INPUT_CHARS = 1024 * 1024
_SPACES = re.compile(r"[ \t\r\n\f\v\u00a0]+")


class _Lines:
    """Accumulates inline text and emits whole lines, each prefixed for its blockquote depth."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._current: list[str] = []

    def add_text(self, text: str) -> None:
        self._current.append(text)

    def break_line(self, quote_depth: int, *, paragraph: bool = False) -> None:
        line = _SPACES.sub(" ", "".join(self._current)).strip()
        self._current.clear()
        if line:
            self.lines.append("> " * min(quote_depth, MAX_QUOTE_PREFIX_DEPTH) + line)
        if paragraph and self.lines and self.lines[-1] != "":
            self.lines.append("")  # one blank line between paragraphs, never a run of them

    def text(self) -> str:
        while self.lines and self.lines[-1] == "":
            self.lines.pop()
        return "\n".join(self.lines)


def html_to_text(markup: str) -> str:
    """Readable plain text of an HTML document or fragment (its first `MAX_HTML_INPUT_CHARS`)."""
    markup = markup[:MAX_HTML_INPUT_CHARS]
    out = _Lines()
    skipping: str | None = None  # name of the element whose content is being dropped
    quote_depth = 0
    position = 0
    for match in _TOKEN.finditer(markup):
        if skipping is None and match.start() > position:
            out.add_text(html.unescape(markup[position : match.start()]))
        position = match.end()
        closing, name = match.group(1), (match.group(2) or "").lower()
        if not name:
            continue
        if skipping is not None:
            if closing and name == skipping:
                skipping = None
            continue
        if name in _SKIPPED_ELEMENTS and not closing:
            skipping = name
        elif name == "blockquote":
            # Text before the quote belongs to the outer depth; inside, to the inner one.
            out.break_line(quote_depth, paragraph=True)
            quote_depth = max(0, quote_depth + (-1 if closing else 1))
        elif name in _PARAGRAPH_ELEMENTS:
            out.break_line(quote_depth, paragraph=True)
        elif name in _LINE_ELEMENTS:
            out.break_line(quote_depth)
            if name == "li" and not closing:
                out.add_text("- ")
        elif name in _CELL_ELEMENTS:
            out.add_text(" ")
    if skipping is None:
        out.add_text(html.unescape(markup[position:]))
    out.break_line(quote_depth)
    return out.text()
