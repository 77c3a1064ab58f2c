"""The new part of an HTML reply: the markup without the quoted history, and its text.

Three passes over the markup, each one linear scan of a tag tokenizer (no backtracking regex, no tree):
1. Clients mark their quote; everything from the first mark on is history: Gmail `div.gmail_quote`,
   Yahoo `yahoo_quoted`, Thunderbird `moz-cite-prefix`, Outlook `#divRplyFwdMsg`, `#OutlookMessageHeader`,
   `#appendonsend`, `hr#stopSpelling` and its header block's "border-top:solid #B5C4DF/#E1E1E1" rule, Apple
   Mail `blockquote type=cite`. A mark followed by a forwarded-message header is not cut: a forward is kept.
2. Without such a mark, the last top-level `<blockquote>` is taken for the quote and removed (text after it,
   such as a disclaimer, stays), as talon does.
3. The rest is rendered to lines and cut where the text stripper sees history begin (an attribution in any
   language, an Outlook header block, "-----Original Message-----"), using `inbound.ticket.reply_markers`.
Elements left open by a cut are closed, so the result is well-formed enough to display.
Only the first `MAX_HTML_CHARS` characters are read, and history is looked for in the first
`MAX_SCANNED_LINES` lines of text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass

from inbound.ticket.reply_markers import attribution_end, is_forward_marker
from inbound.ticket.reply_strip import MAX_SCANNED_LINES, history_starts, leading_header_end

MAX_HTML_CHARS = 1024 * 1024
MAX_OPEN_ELEMENTS = 512
_FORWARD_LOOKAHEAD_CHARS = 600
_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)|<(/?)([a-zA-Z][a-zA-Z0-9:-]*)((?:[^<>\"']|\"[^\"<>]*\"|'[^'<>]*')*)>|<[!?][^<>]*>",
    re.DOTALL,
)
# Marks are searched as words inside a tag's attributes (class, id, style): plain word searches, so a
# hostile attribute list costs one linear scan.
_QUOTE_MARK = re.compile(
    r"\b(?:gmail_quote|yahoo_quoted|moz-cite-prefix|divRplyFwdMsg|OutlookMessageHeader|appendonsend|stopSpelling)\b"
    r"|border-top\s*:\s*solid\s+#(?:B5C4DF|E1E1E1)",
    re.IGNORECASE,
)
_CITE = re.compile(r"\btype\s*=\s*[\"']?cite\b", re.IGNORECASE)
_MARK_WORD = re.compile(rf"{_QUOTE_MARK.pattern}|{_CITE.pattern}", re.IGNORECASE)
_GMAIL_QUOTE_CLASS = re.compile(r"\bgmail_quote\b", re.IGNORECASE)
_ATTRIBUTES = r"((?:[^<>\"']|\"[^\"<>]*\"|'[^'<>]*')*)"
_BLOCKQUOTE_TAG = re.compile(rf"<(/?)blockquote\b{_ATTRIBUTES}>", re.IGNORECASE)
_VOID_ELEMENTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
)
_SKIPPED_ELEMENTS = frozenset({"script", "style", "head", "title", "template"})
_BLOCK_ELEMENTS = frozenset(
    {
        "address", "article", "aside", "blockquote", "br", "caption", "center", "dd", "div", "dl", "dt",
        "fieldset", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li",
        "main", "nav", "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
    }
)  # fmt: skip
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
_HEADER_LINE = re.compile(r"^[^\s:]{1,30}\s?:")


@dataclass(frozen=True)
class HtmlReply:
    html: str  # the markup up to where history starts, open elements closed
    text: str  # its visible text, one line per block, for the text reply


def strip_html_reply(markup: str) -> HtmlReply:
    markup = markup[:MAX_HTML_CHARS]
    marked = _quote_mark(markup)
    if marked is not None and not _render(markup[:marked])[0]:
        # A mark with no text before it heads the new text (a pasted header, a forward without comment):
        # the history starts at the next mark, if any.
        marked = _quote_mark(markup, _tag_end(markup, marked))
    cut_markup = markup[:marked] if marked is not None else _without_last_blockquote(markup)
    lines, starts = _render(cut_markup)
    cut = _history_line(lines)
    if cut is not None:
        cut_markup = cut_markup[: starts[cut]]
        lines = lines[:cut]
    lines = lines[_leading_header_lines(lines) :]
    if len(cut_markup) < len(markup):  # something was cut: close what the cut left open
        cut_markup += _closing_tags(cut_markup)
    return HtmlReply(html=cut_markup.strip(), text="\n".join(lines).strip())


def _tags(markup: str) -> Iterator[tuple[int, bool, str, str]]:
    """(start, closing, lower-case name, attributes) of every tag."""
    for match in _TOKEN.finditer(markup):
        if match.group(2):
            yield match.start(), match.group(1) == "/", match.group(2).lower(), match.group(3)


def _tag_end(markup: str, start: int) -> int:
    tag = _TOKEN.match(markup, start)
    return tag.end() if tag else len(markup)


def _quote_mark(markup: str, begin: int = 0) -> int | None:
    """Where the first client quote mark starts, unless it introduces a forwarded message.

    Each mark word found is checked once against the tag around it; text between `checked` and the word
    is looked at once, so the search stays linear however many words a hostile document repeats.
    """
    checked = begin
    for word in _MARK_WORD.finditer(markup, begin):
        if word.start() < checked:
            continue
        start = markup.rfind("<", checked, word.start())
        if start < 0 or markup.find(">", start, word.start()) >= 0:
            checked = word.end()  # the word is in text, not inside a tag
            continue
        tag = _TOKEN.match(markup, start)
        checked = tag.end() if tag else len(markup)  # an unclosed "<": nothing after it is a tag
        if tag is None or not tag.group(2) or tag.group(1):
            continue
        name, attributes = tag.group(2).lower(), tag.group(3)
        is_mark = _CITE.search(attributes) if name == "blockquote" else _QUOTE_MARK.search(attributes)
        if is_mark:  # the first mark decides: a forward after it is kept whole, marks and all
            return None if _introduces_forward(markup, tag.end()) else start
    return None


def _introduces_forward(markup: str, start: int) -> bool:
    lines, _ = _render(markup[start : start + _FORWARD_LOOKAHEAD_CHARS])
    return any(is_forward_marker(line) for line in lines[:4])


def _without_last_blockquote(markup: str) -> str:
    """The markup without its last top-level blockquote (not Gmail's), the quote of many clients."""
    depth = 0
    span: tuple[int, int] | None = None
    opened = 0
    for match in _BLOCKQUOTE_TAG.finditer(markup):
        if not match.group(1):
            if depth == 0:
                opened = match.start() if not _GMAIL_QUOTE_CLASS.search(match.group(2)) else -1
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0 and opened >= 0:
                span = (opened, match.end())
    if depth > 0 and opened >= 0:  # an unclosed quote runs to the end
        span = (opened, len(markup))
    return markup if span is None else markup[: span[0]] + markup[span[1] :]


def _render(markup: str) -> tuple[list[str], list[int]]:
    """Visible text as lines (one per block) and, for each line, the markup offset where it begins: the
    first block boundary after the previous line, so a cut there drops the line's opening tags too."""
    lines: list[str] = []
    starts: list[int] = []
    current: list[str] = []
    start: int | None = None
    skipping: str | None = None
    position = 0

    def flush() -> None:
        nonlocal start
        text = _SPACES.sub(" ", "".join(current)).replace("\u00a0", " ").strip()
        current.clear()
        if text:
            lines.append(text)
            starts.append(start or 0)
            start = None

    for match in _TOKEN.finditer(markup):
        if skipping is None and match.start() > position:
            start = position if start is None else start
            current.append(html.unescape(markup[position : match.start()]))
        position = match.end()
        name = (match.group(2) or "").lower()
        if not name:
            continue
        closing = match.group(1) == "/"
        if skipping is not None:
            if closing and name == skipping:
                skipping = None
            continue
        if name in _SKIPPED_ELEMENTS and not closing:
            skipping = name
        elif name in _BLOCK_ELEMENTS:
            flush()
            if start is None:
                start = match.end() if closing else match.start()
    if skipping is None and position < len(markup):
        start = position if start is None else start
        current.append(html.unescape(markup[position:]))
    flush()
    return lines, starts


def _leading_header_lines(lines: list[str]) -> int:
    """How many lines a header block at the very top takes (0 when there is none): not new text."""
    if not lines or not history_starts(lines, 0):
        return 0
    end = 1
    while end < len(lines) and end < 12 and _HEADER_LINE.match(lines[end]):
        end += 1
    return end if leading_header_end(lines, 0, []) is not None else 0


def _history_line(lines: list[str]) -> int | None:
    """The first line where history starts, after a header block heading the text (which
    `reply_strip.leading_header_end` explains); None when there is none or a forward comes first."""
    first = _leading_header_lines(lines)
    for index in range(first, min(len(lines), MAX_SCANNED_LINES)):
        if is_forward_marker(lines[index]):
            return None
        if history_starts(lines, index) or attribution_end(lines, index) is not None:
            return index
    return None


def _closing_tags(markup: str) -> str:
    """End tags for the elements still open at the end of `markup`."""
    stack: list[str] = []
    for _, closing, name, attributes in _tags(markup):
        if name in _VOID_ELEMENTS or attributes.rstrip().endswith("/"):
            continue
        if not closing:
            if len(stack) < MAX_OPEN_ELEMENTS:
                stack.append(name)
        elif name in stack:
            while stack and stack.pop() != name:
                pass
    return "".join(f"</{name}>" for name in reversed(stack))
