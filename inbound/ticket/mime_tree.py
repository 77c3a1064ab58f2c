"""Parse raw bytes into a MIME tree, with bounded nesting, and read parts' headers and decoded bytes.

The tree is made of the standard library's compat32 `Message` objects (the API mail-parser builds on), but
the splitting is done here: the stdlib feed parser pushes every body line through a stack of generators,
which costs about 1.3 ms per 100 KB attachment, while finding boundary lines with `bytes.find` costs a few
microseconds. Only header sections go through the stdlib parser. The result matches the stdlib's tree
(tests/inbound/test_mime_tree.py compares both on the fixture corpus): same headers, same parts, same
payload text with 8-bit bytes kept as surrogate escapes, preamble and epilogue.

Every cost is bounded, and a limit costs only what lies beyond it (each is reported as a note, never raised):
nesting deeper than `MAX_DEPTH` keeps the too-deep entity unsplit; parts beyond `MAX_PARTS` are left out;
header fields beyond `MAX_HEADER_FIELDS` in one section (or `MAX_TOTAL_HEADER_FIELDS` in the message) are
left out, except the few that give the structure; a delivery-status part is read up to `MAX_DSN_BLOCKS`
blocks. Boundary lines are found by one C-level regex scan per multipart, so boundaries that are prefixes
of each other cost no Python work per near-miss.
"""

from __future__ import annotations

import binascii
import itertools
import re
from dataclasses import dataclass, field
from email.errors import MissingHeaderBodySeparatorDefect
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

from inbound.ticket.mime_params import header_params
from inbound.ticket.mime_text import decode_base64_lenient, header_str

MAX_DEPTH = 32
MAX_PARTS = 2_000  # real mail has tens; each part costs ~0.1 ms of header parsing and records
MAX_HEADER_FIELDS = 2_000  # in one header section
MAX_TOTAL_HEADER_FIELDS = 20_000  # in the whole message: the stdlib header parser costs ~8 µs a field
MAX_HEADER_BYTES = 1024 * 1024  # in one header section
MAX_TOTAL_HEADER_BYTES = 2 * 1024 * 1024  # in the whole message
MAX_STRUCTURAL_FIELDS = 16  # Content-* and MIME-Version fields kept from beyond the limit
MAX_STRUCTURAL_FIELD_BYTES = 16 * 1024
MAX_DSN_BLOCKS = 1_000
MAX_DELIMITER_LINES = 100_000  # per multipart; consecutive delimiter lines enclose no part but cost a step
# A boundary guessed from the body of a multipart whose declared boundary never occurs: the first "--x"
# line within this many bytes.
_GUESS_WINDOW = 64 * 1024
_GUESSED_DELIMITER = re.compile(rb"(?:\A|(?<=[\r\n]))(--[\x21-\x7e][\x20-\x7e]{0,69}?)[ \t]*(?:\r\n|\r|\n)")
_FIELD_START = re.compile(rb"^[^ \t\r\n]", re.MULTILINE)
_STRUCTURAL_FIELD = re.compile(
    rb"^(?:content-[a-z-]*|mime-version)[ \t]*:[^\r\n]*(?:(?:\r\n|\r|\n)[ \t][^\r\n]*)*(?:\r\n|\r|\n)?",
    re.MULTILINE | re.IGNORECASE,
)
# The stdlib's rule for a header line (email.feedparser.headerRE). The header section ends at the first
# line that breaks it: searched for directly, since matching a run of a million lines with one repeated
# group makes the regex engine keep a backtracking frame per line (hundreds of MB).
_HEADER_LINE_START = re.compile(rb"From |[\x21-\x39\x3b-\x7e]*:|[ \t]")
_NON_HEADER_LINE = re.compile(rb"(?:(?<=\n)|(?<=\r)(?!\n))(?!From |[\x21-\x39\x3b-\x7e]*:|[ \t])")
_LINE_BREAK = re.compile(rb"\r\n|\r(?!\n)|\n")
_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?:\r\n|\r|\n|\Z)")
# Blocks of a delivery-status report are separated by empty lines (a line of spaces continues a field).
_BLANK_LINES = re.compile(rb"(?:\r\n|\r(?!\n)|\n){2,}")
_UUENCODE = frozenset({"x-uuencode", "uuencode", "uue", "x-uue"})


class MimePart(Message):
    """A compat32 message or part that also keeps its undecoded body bytes (for a `message/*` part: the
    nested message exactly as received).

    The stdlib payload is text with 8-bit bytes as surrogate escapes, and reading it back as text makes
    `Message.get_payload` consult the part's charset parameter, which a hostile message can make raise.
    """

    body: bytes = b""
    too_deep: bool = False  # a multipart or message/* part left unsplit at the nesting limit


_HEADER_PARSER = BytesHeaderParser(MimePart, policy=compat32)


@dataclass
class MimeNotes:
    """What the parser left out to stay within its limits: (what, why) pairs for the ticket's parse_errors."""

    notes: list[tuple[str, str]] = field(default_factory=list)

    def add(self, what: str, why: str) -> None:
        if (what, why) not in self.notes:
            self.notes.append((what, why))


def parse_mime(raw: bytes, notes: MimeNotes | None = None) -> Message:
    """The full MIME tree of `raw`, within the limits above; what was left out is added to `notes`."""
    return _Splitter(raw, notes if notes is not None else MimeNotes()).entity(0, len(raw), depth=1)


def parse_header_section(raw: bytes, notes: MimeNotes | None = None) -> Message:
    """Only the top-level header section: the fallback when the body cannot be parsed."""
    header_end, _, missing_separator = _split_header_section(raw, 0, len(raw))
    budget = [MAX_TOTAL_HEADER_FIELDS, MAX_TOTAL_HEADER_BYTES]
    notes = notes if notes is not None else MimeNotes()
    return _parse_headers(raw[:header_end], missing_separator=missing_separator, budget=budget, notes=notes)


class _Splitter:
    """Walks spans of one buffer, so a large attachment is copied once (into its part), not per level."""

    def __init__(self, raw: bytes, notes: MimeNotes) -> None:
        self.raw = raw
        self.parts = 0
        self.notes = notes
        self.header_budget = [MAX_TOTAL_HEADER_FIELDS, MAX_TOTAL_HEADER_BYTES]

    def entity(self, start: int, end: int, *, depth: int, default_type: str = "text/plain") -> Message:
        """The message or body part in raw[start:end]: headers parsed by the stdlib, body split here."""
        self.parts += 1
        header_end, body_start, missing_separator = _split_header_section(self.raw, start, end)
        message = _parse_headers(
            self.raw[start:header_end],
            missing_separator=missing_separator,
            budget=self.header_budget,
            notes=self.notes,
        )
        message.set_default_type(default_type)
        maintype = message.get_content_maintype()
        too_deep = depth >= MAX_DEPTH and maintype in ("multipart", "message")
        if too_deep:
            message.too_deep = True
            self.notes.add(
                "mime", f"MIME structure nested deeper than {MAX_DEPTH} levels: the rest is kept unsplit"
            )
        if maintype == "multipart" and not too_deep and self._split(message, body_start, end, depth):
            return message
        message.body = self.raw[body_start:end]
        if message.get_content_type() == "message/delivery-status":
            message.set_payload(self._delivery_status_blocks(message.body))
        elif maintype == "message" and not too_deep:
            message.set_payload([self.entity(body_start, end, depth=depth + 1)])
        else:  # a leaf, or a multipart without a usable boundary: the body stays text, as in the stdlib
            message.set_payload(_text(message.body))
        return message

    def _delivery_status_blocks(self, body: bytes) -> list[Message | str]:
        blocks: list[Message | str] = []
        start = 0
        for separator in itertools.chain(_BLANK_LINES.finditer(body), [None]):
            block = body[start : separator.start()] if separator else body[start:]
            start = separator.end() if separator else len(body)
            if block.strip():
                if len(blocks) >= MAX_DSN_BLOCKS:
                    self.notes.add(
                        "mime", f"delivery-status report: only the first {MAX_DSN_BLOCKS} blocks read"
                    )
                    break
                blocks.append(_HEADER_PARSER.parsebytes(block))
        return blocks

    def _split(self, message: Message, start: int, end: int, depth: int) -> bool:
        """Split the body raw[start:end] at the boundary; False (body kept as text) when it cannot be."""
        boundary = (header_params(message, "content-type", keep_bytes=True).get("boundary") or "").rstrip()
        found = _delimiters(self.raw, b"--" + boundary.encode("utf-8", "surrogateescape"), start, end)
        if not boundary or not found:
            found = self._guessed_delimiters(start, end)
        if not found or found[0][2]:  # no delimiter, or only a close delimiter: the body stays text
            return False
        child_type = "message/rfc822" if message.get_content_subtype() == "digest" else "text/plain"
        children: list[Message | str] = []
        for (_, part_start, _), (next_delimiter, _, _) in itertools.pairwise(found):
            if part_start < next_delimiter and self._room_for_a_part():
                part_end = _before_line_break(self.raw, part_start, next_delimiter)
                children.append(self.entity(part_start, part_end, depth=depth + 1, default_type=child_type))
        first_delimiter, last_end, closed = found[0][0], found[-1][1], found[-1][2]
        if not closed and self._room_for_a_part():  # no close delimiter: the last part runs to the end
            children.append(self.entity(last_end, end, depth=depth + 1, default_type=child_type))
        message.set_payload(children)
        if first_delimiter > start:
            message.preamble = _text(self.raw[start : _before_line_break(self.raw, start, first_delimiter)])
        message.epilogue = _text(self.raw[last_end:end]) if closed else None
        return True

    def _room_for_a_part(self) -> bool:
        if self.parts < MAX_PARTS:
            return True
        self.notes.add("mime", f"more than {MAX_PARTS} parts: the rest are left out")
        return False

    def _guessed_delimiters(self, start: int, end: int) -> list[tuple[int, int, bool]]:
        """The declared boundary never occurs (or none is declared): senders that get it wrong still
        separate their parts with the first "--something" line, which is used when it recurs."""
        guess = _GUESSED_DELIMITER.search(self.raw, start, min(end, start + _GUESS_WINDOW))
        if guess is None:
            return []
        found = _delimiters(self.raw, guess.group(1), start, end)
        if len(found) < 2:
            return []
        self.notes.add("mime", "multipart boundary not found where declared: parts split at the lines used")
        return found


def _parse_headers(
    header_section: bytes, *, missing_separator: bool, budget: list[int], notes: MimeNotes
) -> MimePart:
    """The stdlib parses at most `budget` = [fields, bytes] (and `MAX_HEADER_FIELDS`, `MAX_HEADER_BYTES`
    per section); `budget` is shared by the whole message. Beyond, only the structural fields are kept."""
    allowed_bytes = max(0, min(MAX_HEADER_BYTES, budget[1]))
    if len(header_section) > allowed_bytes:
        header_section = _cut_section(header_section, allowed_bytes, notes)
    allowed = max(0, min(MAX_HEADER_FIELDS, budget[0]))
    if header_section.count(b"\n") + header_section.count(b"\r") > allowed:
        header_section = _bounded_fields(header_section, allowed, notes)
    message = _HEADER_PARSER.parsebytes(header_section)
    assert isinstance(message, MimePart)  # the parser's message class
    budget[0] -= len(message.keys())
    budget[1] -= len(header_section)
    if missing_separator:
        message.defects.append(MissingHeaderBodySeparatorDefect())
    return message


def _cut_section(section: bytes, allowed: int, notes: MimeNotes) -> bytes:
    """The section cut at a line break within `allowed` bytes, plus the structural fields after the cut."""
    cut = max(section.rfind(b"\n", 0, allowed), section.rfind(b"\r", 0, allowed)) + 1
    notes.add("headers", f"header section larger than {allowed} bytes: the rest is left out")
    return section[:cut] + _structural_fields(section[cut:])


def _structural_fields(rest: bytes) -> bytes:
    found = itertools.islice(_STRUCTURAL_FIELD.finditer(rest), MAX_STRUCTURAL_FIELDS)
    fields = (match.group()[:MAX_STRUCTURAL_FIELD_BYTES] for match in found)
    return b"".join(field if field.endswith((b"\n", b"\r")) else field + b"\r\n" for field in fields)


def _bounded_fields(section: bytes, allowed: int, notes: MimeNotes) -> bytes:
    starts = _FIELD_START.finditer(section)
    cut = next(itertools.islice(starts, allowed, None), None)
    if cut is None:
        return section
    notes.add("headers", f"more header fields than the limit ({allowed}): the rest are left out")
    return section[: cut.start()] + _structural_fields(section[cut.start() :])


def _split_header_section(data: bytes, start: int, end: int) -> tuple[int, int, bool]:
    """(header section end, body start, whether the blank separator line was missing) for data[start:end],
    split where the stdlib splits it."""
    if start >= end or not _HEADER_LINE_START.match(data, start, end):
        header_end = start
    else:
        found = _NON_HEADER_LINE.search(data, start + 1, end)
        header_end = found.start() if found else end
    separator = _LINE_BREAK.match(data, header_end, end)
    if separator:
        return header_end, separator.end(), False
    return header_end, header_end, header_end < end


def _delimiters(data: bytes, delimiter: bytes, start: int, end: int) -> list[tuple[int, int, bool]]:
    """(line start, line end, is-close-delimiter) of each boundary line in data[start:end], up to the
    close delimiter or `MAX_DELIMITER_LINES` lines (beyond them, the rest runs to the end as one part).

    One regex scan finds whole delimiter lines at a line start: near-misses ("--ab" when looking for "--a",
    or a delimiter in mid-line) are rejected inside the regex engine, not one by one in Python.
    """
    if len(delimiter) <= 2:
        return []
    found: list[tuple[int, int, bool]] = []
    scan_from = start
    if data.startswith(delimiter, start, end):  # the span's first line: no line break precedes it here
        tail = _DELIMITER_TAIL.match(data, start + len(delimiter), end)
        if tail:
            found.append((start, tail.end(), tail.group(1) is not None))
            if tail.group(1) is not None:
                return found
            scan_from = tail.end()
    for match in _delimiter_line(delimiter).finditer(data, scan_from, end):
        if match.start() == 0 or data[match.start() - 1] not in b"\r\n":
            continue  # mid-line: not a delimiter (costs a step only where the whole line matched)
        closed = match.group(1) is not None
        found.append((match.start(), match.end(), closed))
        if closed or len(found) >= MAX_DELIMITER_LINES:
            break
    return found


def _delimiter_line(delimiter: bytes) -> re.Pattern[bytes]:
    # The literal comes first, so the engine skips to its occurrences with a fast substring search.
    return re.compile(re.escape(delimiter) + rb"(--)?[ \t]*(?:\r\n|\r|\n|\Z)")


def _before_line_break(data: bytes, start: int, end: int) -> int:
    """RFC 2046: the line break before a boundary line belongs to the boundary, not to the part."""
    if end - 2 >= start and data.startswith(b"\r\n", end - 2):
        return end - 2
    if end - 1 >= start and data[end - 1] in b"\r\n":
        return end - 1
    return end


def _text(data: bytes) -> str:
    return data.decode("ascii", "surrogateescape")


def raw_header(part: Message, name: str) -> str | None:
    """First header `name` of `part` as unfolded Unicode, or None.

    Reads the stored value directly: `Message.get` turns 8-bit values into `Header` objects.
    """
    wanted = name.lower()
    for key, value in part.raw_items():
        if key.lower() == wanted:
            return header_str(str(value))
    return None


def disposition(part: Message) -> str | None:
    """The Content-Disposition type ("inline", "attachment", ...), lower-case, or None when absent."""
    value = raw_header(part, "content-disposition")
    if value is None:
        return None
    return value.split(";", 1)[0].strip().lower() or None


def part_bytes(part: Message) -> bytes:
    """The content of a leaf or `message/*` part with its transfer encoding undone.

    A nested message comes out exactly as it was received. Base64 is decoded leniently here (the stdlib
    stops at the first misplaced padding).
    """
    if not isinstance(part, MimePart):  # not built by this module: let the stdlib decode it
        decoded = None if part.is_multipart() else part.get_payload(decode=True)
        return decoded if isinstance(decoded, bytes) else b""
    encoding = (raw_header(part, "content-transfer-encoding") or "").strip().lower()
    if encoding == "base64":
        return decode_base64_lenient(part.body)
    if encoding == "quoted-printable":
        return binascii.a2b_qp(part.body)
    if encoding in _UUENCODE and not part.is_multipart():
        decoded = part.get_payload(decode=True)
        return decoded if isinstance(decoded, bytes) else part.body
    return part.body
