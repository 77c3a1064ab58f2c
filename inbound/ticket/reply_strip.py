"""The new text of a reply, without the quoted history, and the signature cut from it.

Reads the text line by line and stops where history starts (the markers are in
`inbound.ticket.reply_markers`): an attribution followed by unquoted text (as Gmail and Apple Mail write
when the history is not "> "-quoted), an "-----Original Message-----" separator, an Outlook header block,
a mailing-list footer, or an attribution sharing the reply's last line. A header block with no new text
above it is not history: it introduces the text below it (a pasted header, a forward without comment).
An attribution followed by "> " lines only loses itself and its quote: bottom-posted answers below the
quote are kept.

Lines quoted with ">" are dropped wherever they are; so is a line between two quoted lines, the wrapped
tail of a quoted line that lost its ">". An isolated line that merely starts with ">>>" or holds "<<<" (a
banner, an arrow) is the sender's own text and is kept. Once a forwarded-message marker is seen nothing
more is cut: the forward is what the sender wants the helpdesk to read.

The signature (`inbound.ticket.signature`) is cut from the reply and returned beside it.
Only the first `MAX_SCANNED_CHARS` characters and `MAX_SCANNED_LINES` lines are read, so the cost stays
linear and bounded on hostile bodies; when no history starts within them, the rest of the text is kept as
it is, unread.
"""

from __future__ import annotations

from dataclasses import dataclass

from inbound.ticket.reply_markers import (
    attribution_end,
    inline_attribution_start,
    is_forward_marker,
    is_original_message,
    starts_header_block,
    starts_list_footer,
)
from inbound.ticket.signature import is_mobile_signature, is_signature_delimiter

MAX_SCANNED_CHARS = 256 * 1024
MAX_SCANNED_LINES = 20_000
MAX_SIGNATURE_LINES = 30
_SEPARATOR_CHARS = frozenset("-_=*~")


@dataclass(frozen=True)
class Reply:
    text: str  # the new text; "" when nothing new remains
    signature: str | None  # the signature cut from it, None when there was none


def strip_reply(text: str) -> str:
    """`text` (LF line endings) without quoted history and signature; "" when nothing new remains."""
    return split_reply(text).text


def split_reply(text: str) -> Reply:
    boundary = _scan_boundary(text)
    scanned = text[:boundary]
    lines = (scanned[:-1] if boundary < len(text) and scanned.endswith("\n") else scanned).split("\n")
    kept: list[str] = []
    last_kept = -1  # the index of the last line kept as the sender's text
    index = 0
    while index < len(lines):
        line = lines[index]
        if is_forward_marker(line):
            kept.extend(item.rstrip() for item in lines[index:])
            break
        if history_starts(lines, index):
            leading = leading_header_end(lines, index, kept)
            if leading is None:
                break
            index = leading
            continue
        if is_signature_delimiter(line):
            return Reply(_trim(_squeeze_blank_lines(kept)), _signature(lines, index + 1))
        if is_mobile_signature(line):
            return Reply(_trim(_squeeze_blank_lines(kept)), line.strip())
        end = attribution_end(lines, index)
        if end is not None:
            if not _next_text_is_quoted(lines, end):
                break
            index = _skip_quote_block(lines, end)
            continue
        if is_quoted(lines, index):
            index += 1
            continue
        inline = inline_attribution_start(line)
        if inline is not None:
            kept.append(line[:inline].rstrip().rstrip("-").rstrip())
            break
        kept.append(line.rstrip())
        last_kept = index
        index += 1
    else:
        # The scan ran out in the sender's own text, before any history: what lies beyond it was not read,
        # and is the sender's too. (Run out inside quoted history, the rest is history.)
        if boundary < len(text) and last_kept == len(lines) - 1:
            kept.append(text[boundary:].rstrip())
    return Reply(_trim(_squeeze_blank_lines(kept)), None)


def _scan_boundary(text: str) -> int:
    """Where the scanned part of `text` ends: at a line start, within both scan limits."""
    if len(text) <= MAX_SCANNED_CHARS and text.count("\n", 0, MAX_SCANNED_CHARS) < MAX_SCANNED_LINES:
        return len(text)
    boundary = text.rfind("\n", 0, MAX_SCANNED_CHARS) + 1  # 0: a first line longer than the limit
    start = 0
    for _ in range(MAX_SCANNED_LINES):  # the start of line MAX_SCANNED_LINES, if it comes sooner
        found = text.find("\n", start, boundary)
        if found < 0:
            return boundary
        start = found + 1
    return start


def history_starts(lines: list[str], index: int) -> bool:
    """Whether quoted history that runs to the end starts at `index` (attributions aside)."""
    return (
        is_original_message(lines[index])
        or starts_header_block(lines, index)
        or starts_list_footer(lines, index)
    )


def leading_header_end(lines: list[str], index: int, before: list[str]) -> int | None:
    """Where a header block that history would start at ends, when no new text comes before it.

    History cannot start before the new text: an Outlook header block (or "-----Original Message-----" and
    its block) at the very top introduces the text below it, as a pasted header or a forward without a
    comment does, so the block is skipped and the search for history goes on after it."""
    if any(line.strip() for line in before) or not (
        is_original_message(lines[index]) or starts_header_block(lines, index)
    ):
        return None
    end = index + 1
    while end < len(lines) and lines[end].strip():
        end += 1
    return end


def is_quoted(lines: list[str], index: int) -> bool:
    """A ">"-quoted line, or the unquoted wrapped tail of one (between quoted lines)."""
    stripped = lines[index].strip()
    previous_quoted = index > 0 and lines[index - 1].lstrip().startswith(">")
    following = next((line.strip() for line in lines[index + 1 : index + 3] if line.strip()), "")
    if stripped.startswith(">"):
        isolated = not previous_quoted and not following.startswith(">")
        return not (isolated and (stripped.startswith(">>>") or "<<<" in stripped))
    return bool(stripped) and previous_quoted and following.startswith(">")


def _skip_quote_block(lines: list[str], start: int) -> int:
    """The index after the quoted lines (and blank lines) that follow an attribution."""
    index = start
    while index < len(lines) and (not lines[index].strip() or is_quoted(lines, index)):
        index += 1
    return index


def _next_text_is_quoted(lines: list[str], start: int) -> bool:
    for line in lines[start:]:
        if line.strip():
            return line.lstrip().startswith(">")
    return True  # nothing follows: an attribution left behind after its quote was removed


def _signature(lines: list[str], start: int) -> str | None:
    """The lines after a signature delimiter, up to where history starts."""
    taken: list[str] = []
    for index in range(start, min(len(lines), start + MAX_SIGNATURE_LINES)):
        line = lines[index]
        if (
            history_starts(lines, index)
            or attribution_end(lines, index) is not None
            or is_quoted(lines, index)
        ):
            break
        taken.append(line.rstrip())
    return _trim(taken) or None


def _trim(lines: list[str]) -> str:
    """Drop blank lines and separator rules from both ends."""
    while lines and _is_rule_or_blank(lines[-1].strip()):
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines)


def _is_rule_or_blank(line: str) -> bool:
    return not line or (len(line) >= 2 and set(line) <= _SEPARATOR_CHARS)


def _squeeze_blank_lines(lines: list[str]) -> list[str]:
    """One blank line where dropped quotes left several."""
    return [line for i, line in enumerate(lines) if line.strip() or i == 0 or lines[i - 1].strip()]
