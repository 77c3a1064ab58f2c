"""Where the header section really starts: stray blank lines before the message's own header fields.

Two shapes are common enough to repair rather than to read as "no header section" (which leaves a ticket
with no text, no sender and no subject):

- blank lines at the very start, before the first header field: written by scripts and by tools that save
  mail, and skipped by Ruby's mail gem (so GitLab's and Discourse's receivers read such mail normally);
- a blank line between the trace fields a relay prepended (`Received:`, `Return-Path:`, ...) and the header
  fields the client sent: what arrives when a client's DATA starts with an empty line.

Only a few lines at the start are looked at (`MAX_TRACE_LINES`, `MAX_STRAY_BLANK_LINES`), so the cost is
bounded whatever the message's size; the repaired bytes are the input minus the stray line breaks.
"""

from __future__ import annotations

import re

MAX_STRAY_BLANK_LINES = 8
MAX_TRACE_LINES = 200  # trace fields and their continuation lines read before giving up
MAX_TRACE_BYTES = 64 * 1024

# Fields added in transit (by relays or by Postroom itself) rather than by the message's author.
TRACE_FIELDS = frozenset(
    {"received", "return-path", "delivered-to", "x-original-to", "authentication-results", "received-spf"}
)
TRACE_PREFIXES = ("arc-", "x-spam", "x-virus", "x-postroom")

_LINE_BREAK = re.compile(rb"\r\n|\r(?!\n)|\n")
_LINE = re.compile(rb"[^\r\n]*(?:\r\n|\r(?!\n)|\n)")
_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


def is_trace_field(name: str) -> bool:
    """`name` (lower-case) is a field relays add, not one the message's author wrote."""
    return name in TRACE_FIELDS or name.startswith(TRACE_PREFIXES)


def repaired_header_start(raw: bytes) -> tuple[bytes, str | None]:
    """(the bytes to parse, what was repaired) — `raw` itself and None when nothing needed repair."""
    after_blanks = _skip_blank_lines(raw, 0)
    if after_blanks:
        if _FIELD_NAME.match(raw, after_blanks):
            return raw[after_blanks:], "blank lines before the header section were skipped"
        return raw, None
    trace_end = _trace_section_end(raw)
    if trace_end is None:
        return raw, None
    fields_start = _skip_blank_lines(raw, trace_end)
    if fields_start and _FIELD_NAME.match(raw, fields_start):
        return (
            raw[:trace_end] + raw[fields_start:],
            "a blank line between the trace fields and the header fields was skipped",
        )
    return raw, None


def _skip_blank_lines(raw: bytes, pos: int) -> int | None:
    """The offset after the empty lines at `pos` (`pos` when there are none); None when there are more
    than MAX_STRAY_BLANK_LINES: that is no stray line break but a message without headers."""
    for _ in range(MAX_STRAY_BLANK_LINES + 1):
        found = _LINE_BREAK.match(raw, pos)
        if found is None:
            return pos
        pos = found.end()
    return None


def _trace_section_end(raw: bytes) -> int | None:
    """The offset of the blank line that ends a first header section made of trace fields only, or None
    when the section has another field, is not a header section, or is longer than the limits."""
    pos = 0
    seen_field = False
    for _ in range(MAX_TRACE_LINES):
        if pos >= min(len(raw), MAX_TRACE_BYTES):
            return None
        if _LINE_BREAK.match(raw, pos):
            return pos if seen_field else None
        line = _LINE.match(raw, pos)
        if line is None:  # the last line has no line break: no blank line follows
            return None
        if raw[pos : pos + 1] in (b" ", b"\t"):
            if not seen_field:
                return None
        else:
            name = _FIELD_NAME.match(raw, pos)
            if name is None or not is_trace_field(name.group(1).decode("ascii").lower()):
                return None
            seen_field = True
        pos = line.end()
    return None
