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
Only the first `MAX_HTML_CHARS` characters are read.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass

from inbound.ticket.reply_markers import attribution_end, is_forward_marker
from inbound.ticket.reply_strip import history_starts

MAX_HTML_CHARS = 1024 * 1024
MAX_OPEN_ELEMENTS = 512
_FORWARD_LOOKAHEAD_CHARS = 600
_TOKEN = re.compile(
    r"<!--.*?(?:-->|\Z)|<(/?)([a-zA-Z][a-zA-Z0-9:-]*)((?:[^<>\"']|\"[^\"<>]*\"|'[^'<>]*')*)>|<[!?][^<>]*>",
    re.DOTALL,
)
_QUOTE_MARK = re.compile(
    r"class\s*=\s*[\"']?[^\"'>]*\b(?:gmail_quote|yahoo_quoted|moz-cite-prefix)\b"
    r"|id\s*=\s*[\"']?(?:divRplyFwdMsg|OutlookMessageHeader|appendonsend|stopSpelling)\b"
    r"|border-top\s*:\s*solid\s+#(?:B5C4DF|E1E1E1)",
    re.IGNORECASE,
)
_CITE = re.compile(r"type\s*=\s*[\"']?cite\b", re.IGNORECASE)
_GMAIL_QUOTE_CLASS = re.compile(r"class\s*=\s*[\"']?[^\"'>]*\bgmail_quote\b", re.IGNORECASE)
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


@dataclass(frozen=True)
class HtmlReply:
    html: str  # the markup up to where history starts, open elements closed
    text: str  # its visible text, one line per block, for the text reply


@dataclass(frozen=True)
class _Tag:
    start: int
    end: int
    closing: bool
    name: str
    attributes: str


def strip_html_reply(markup: str) -> HtmlReply:
    markup = markup[:MAX_HTML_CHARS]
    marked = _quote_mark(markup)
    if marked is not None:
        markup = markup[:marked]
    else:
        markup = _without_last_blockquote(markup)
    lines, starts = _render(markup)
    cut = next((i for i in range(len(lines)) if _history_at(lines, i)), None)
    if cut is not None:
        markup = markup[: starts[cut]]
        lines = lines[:cut]
    return HtmlReply(html=(markup + _closing_tags(markup)).strip(), text="\n".join(lines).strip())


def _tags(markup: str) -> Iterator[_Tag]:
    for match in _TOKEN.finditer(markup):
        if match.group(2):
            yield _Tag(match.start(), match.end(), match.group(1) == "/", match.group(2).lower(), match.group(3))


def _quote_mark(markup: str) -> int | None:
    """Where the first client quote mark starts, unless it introduces a forwarded message."""
    for tag in _tags(markup):
        if tag.closing:
            continue
        is_mark = bool(_QUOTE_MARK.search(tag.attributes)) or (tag.name == "blockquote" and _CITE.search(tag.attributes))
        if tag.name == "blockquote" and not _CITE.search(tag.attributes):
            is_mark = False  # Gmail's inner blockquote.gmail_quote is cut with its div, or is not a quote
        if is_mark:  # the first mark decides: a forward after it is kept whole, marks and all
            return None if _introduces_forward(markup, tag.end) else tag.start
    return None


def _introduces_forward(markup: str, start: int) -> bool:
    lines, _ = _render(markup[start : start + _FORWARD_LOOKAHEAD_CHARS])
    return any(is_forward_marker(line) for line in lines[:4])


def _without_last_blockquote(markup: str) -> str:
    """The markup without its last top-level blockquote (not Gmail's), the quote of many clients."""
    depth = 0
    span: tuple[int, int] | None = None
    opened = 0
    for tag in _tags(markup):
        if tag.name != "blockquote":
            continue
        if not tag.closing:
            if depth == 0:
                opened = tag.start if not _GMAIL_QUOTE_CLASS.search(tag.attributes) else -1
            depth += 1
        elif depth > 0:
            depth -= 1
            if depth == 0 and opened >= 0:
                span = (opened, tag.end)
    if depth > 0 and opened >= 0:  # an unclosed quote runs to the end
        span = (opened, len(markup))
    return markup if span is None else markup[: span[0]] + markup[span[1] :]


def _render(markup: str) -> tuple[list[str], list[int]]:
    """Visible text as lines (one per block) and, for each line, the markup offset where it begins."""
    lines: list[str] = []
    starts: list[int] = []
    current: list[str] = []
    current_start = 0
    skipping: str | None = None
    position = 0

    def flush() -> None:
        text = _SPACES.sub(" ", "".join(current)).replace("\u00a0", " ").strip()
        if text:
            lines.append(text)
            starts.append(current_start)
        current.clear()

    for match in _TOKEN.finditer(markup):
        if skipping is None and match.start() > position:
            if not current:
                current_start = position
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
            current_start = match.start()
    if skipping is None and position < len(markup):
        if not current:
            current_start = position
        current.append(html.unescape(markup[position:]))
    flush()
    return lines, starts


def _history_at(lines: list[str], index: int) -> bool:
    return history_starts(lines, index) or attribution_end(lines, index) is not None


def _closing_tags(markup: str) -> str:
    """End tags for the elements still open at the end of `markup`."""
    stack: list[str] = []
    for tag in _tags(markup):
        if tag.name in _VOID_ELEMENTS or tag.attributes.rstrip().endswith("/"):
            continue
        if not tag.closing:
            if len(stack) < MAX_OPEN_ELEMENTS:
                stack.append(tag.name)
        elif tag.name in stack:
            while stack and stack.pop() != tag.name:
                pass
    return "".join(f"</{name}>" for name in reversed(stack))
