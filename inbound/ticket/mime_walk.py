"""Sort the parts of a MIME tree into body text, body HTML and attachments.

Rules, in the order they apply to a part:
- `message/*` (a forwarded message/rfc822, a delivery-status block, ...) is an attachment and is not
  descended into: a forwarded message's text must not leak into the body of the ticket.
- A multipart is descended into. In multipart/alternative only the first text/plain and the first
  text/html child are kept as body; other text renderings (text/enriched, text/watch-html) are dropped as
  duplicates, while anything else (a text/calendar invite) is an attachment.
- text/plain and text/html without a filename and not marked `attachment` are body; so is the first one
  explicitly marked `inline` despite a filename, when there is no body of its kind yet (as Python's
  `get_body` reads it); everything else is an attachment, including inline images (which keep their
  Content-ID).
- A multipart that could not be split (no boundary line anywhere) is read as text/plain when the message
  has no text yet: an agent is better served by the raw text than by an opaque attachment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from email.message import Message

from inbound.ticket.mime_params import header_params
from inbound.ticket.mime_text import clean_body_text, decode_body_text, normalize_newlines
from inbound.ticket.mime_tree import MAX_DEPTH, disposition, part_bytes, raw_header

_BODY_SUBTYPES = ("plain", "html")
# Children of multipart/alternative kept besides the first plain and HTML body: a calendar invite.
_ALTERNATIVE_KEPT = ("plain", "html", "calendar")
# charset-normalizer guesses one message may cost (a few ms each): the rest fall back to UTF-8/Windows-1252.
MAX_CHARSET_GUESSES = 4


@dataclass
class MimeContent:
    text_parts: list[str] = field(default_factory=list)
    html_parts: list[str] = field(default_factory=list)
    attachments: list[Message] = field(default_factory=list)
    # message/delivery-status parts found inside a multipart/report with report-type=delivery-status.
    delivery_reports: list[Message] = field(default_factory=list)
    # report-type of a multipart/report at the top of the message (root or a direct child), lower-case.
    report_type: str | None = None
    charset_guesses: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (field, reason) for parse_errors

    @property
    def text(self) -> str | None:
        return "\n".join(self.text_parts) if self.text_parts else None

    @property
    def html(self) -> str | None:
        return "\n".join(self.html_parts) if self.html_parts else None


def collect_content(root: Message) -> MimeContent:
    content = MimeContent()
    _visit(root, content, depth=0, in_report=False)
    return content


def _visit(part: Message, content: MimeContent, *, depth: int, in_report: bool) -> None:
    """Sort `part`; a part that trips a reader becomes an attachment (its bytes kept), noted in `failures`."""
    try:
        _sort(part, content, depth=depth, in_report=in_report)
    except Exception as exc:
        content.failures.append(
            ("body", f"a part could not be read ({type(exc).__name__}): kept as attachment")
        )
        content.attachments.append(part)


def _sort(part: Message, content: MimeContent, *, depth: int, in_report: bool) -> None:
    content_type = part.get_content_type()
    maintype, _, subtype = content_type.partition("/")
    if maintype == "message" or depth >= MAX_DEPTH:
        content.attachments.append(part)
        if in_report and content_type == "message/delivery-status":
            content.delivery_reports.append(part)
    elif part.is_multipart():
        _visit_multipart(part, subtype, content, depth=depth)
    elif maintype == "multipart" and not content.text_parts and _unsplittable(part):
        _add_body(part, "plain", content)  # unsplittable: its body is all the text there is
    elif maintype == "text" and subtype in _BODY_SUBTYPES and _is_body_text(part, subtype, content):
        _add_body(part, subtype, content)
    else:
        content.attachments.append(part)


def _visit_multipart(part: Message, subtype: str, content: MimeContent, *, depth: int) -> None:
    children = [child for child in part.get_payload() if isinstance(child, Message)]
    in_report = False
    if subtype == "report":
        report_type = (header_params(part, "content-type").get("report-type") or "").strip().lower()
        in_report = report_type == "delivery-status"
        if depth <= 1 and content.report_type is None:
            content.report_type = report_type
    if subtype != "alternative":
        for child in children:
            _visit(child, content, depth=depth + 1, in_report=in_report)
        return
    taken: set[str] = set()
    for child in children:
        child_maintype, _, child_subtype = child.get_content_type().partition("/")
        if child_maintype == "text" and _is_inline_unnamed(child):
            if child_subtype in taken or child_subtype not in _ALTERNATIVE_KEPT:
                continue  # another rendering of a body already taken
            taken.add(child_subtype)
        _visit(child, content, depth=depth + 1, in_report=False)


def _unsplittable(part: Message) -> bool:
    """A multipart left as text because no boundary line was found (not because it nests too deep)."""
    return not getattr(part, "too_deep", False) and _is_inline_unnamed(part)


def _is_inline_unnamed(part: Message) -> bool:
    """Not marked as an attachment and without a filename: a candidate for the body."""
    if disposition(part) == "attachment":
        return False
    # Most parts plainly have no "name" anywhere: no need to parse their parameters.
    declared = (raw_header(part, "content-disposition") or "") + (raw_header(part, "content-type") or "")
    return "name" not in declared.lower() or not declared_filename(part)


def _is_body_text(part: Message, subtype: str, content: MimeContent) -> bool:
    return _is_inline_unnamed(part) or _is_first_named_inline(part, subtype, content)


def _is_first_named_inline(part: Message, subtype: str, content: MimeContent) -> bool:
    """A text part explicitly marked `inline` but carrying a filename, when the message has no body of its
    kind yet: the body, as Python's `EmailMessage.get_body` reads it (only `attachment` excludes a part).
    Later ones stay attachments."""
    taken = content.html_parts if subtype == "html" else content.text_parts
    return not taken and disposition(part) == "inline"


def declared_filename(part: Message) -> str | None:
    """Content-Disposition's filename, else Content-Type's name (RFC 2231 decoded), as the stdlib reads it."""
    for header, parameter in (("content-disposition", "filename"), ("content-type", "name")):
        value = header_params(part, header).get(parameter)
        if value is not None:
            return value.strip() or None
    return None


def _add_body(part: Message, subtype: str, content: MimeContent) -> None:
    data = part_bytes(part)
    if not data.strip():
        return  # empty body parts (e.g. the first part of many DSNs) add nothing
    charset = header_params(part, "content-type").get("charset")
    may_guess = content.charset_guesses < MAX_CHARSET_GUESSES
    decoded, guessed = decode_body_text(data, charset, may_guess=may_guess)
    content.charset_guesses += guessed
    text = clean_body_text(normalize_newlines(decoded))
    if subtype == "html":
        content.html_parts.append(text)
    else:
        content.text_parts.append(text)
