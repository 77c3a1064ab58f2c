"""The new text of a reply, without the quoted history and the signature.

Reads the text line by line and stops at the first line where history or a signature starts:
- an attribution ("On Mon, 2 Nov 2026, Alice <a@example.com> wrote:", possibly wrapped over three lines,
  and its common translations) followed by unquoted text, as Gmail and Apple Mail write when the history
  is not "> "-quoted; an attribution followed by "> " lines only loses itself (bottom-posting keeps the
  answer written below the quote);
- an Outlook separator: "-----Original Message-----" (and translations), or a "From:" line followed
  within a few lines by "Sent:"/"Date:" and "To:"/"Subject:" (the header block Outlook inserts);
- a signature delimiter: "-- " (RFC 3676), or "--" as clients that trim trailing spaces send it.
Lines quoted with ">" are dropped wherever they are. Forwarded content is kept: it is what the sender
wants the helpdesk to read.
"""

from __future__ import annotations

import re

_ATTRIBUTION_START = re.compile(r"^(?:On|Am|Le|El|Op|Il|Em|Den|W dniu)\b", re.IGNORECASE)
# The end of an attribution: "... Alice <a@example.com> wrote:", or with the name after the verb, as in
# "Am 02.11.2026 schrieb Alice <a@example.com>:". Searched only in short candidates ending with ":".
_ATTRIBUTION_END = re.compile(
    r"(?:(?:wrote|a écrit|escribió|ha scritto|escreveu|napisał\S*)\s*:"
    r"|(?:schrieb|schreef|skrev)\b.{0,200}:)$",
    re.IGNORECASE,
)
_MAX_ATTRIBUTION_CHARS = 600
_ORIGINAL_MESSAGE = re.compile(
    r"^-{2,}\s*(?:Original Message|Ursprüngliche Nachricht|Message d'origine|Mensaje original"
    r"|Messaggio originale|Oorspronkelijk bericht)\s*-{2,}$",
    re.IGNORECASE,
)
_OUTLOOK_FROM = re.compile(r"^\*?(?:From|Von|De|Van|Da)\s?:\*?\s*\S", re.IGNORECASE)
_OUTLOOK_SENT = re.compile(
    r"^\*?(?:Sent|Date|Gesendet|Datum|Envoyé|Enviado|Verzonden|Inviato)\s?:", re.IGNORECASE
)
_OUTLOOK_TO = re.compile(
    r"^\*?(?:To|Subject|An|Betreff|À|Objet|Para|Asunto|Aan|Onderwerp|A|Oggetto)\s?:", re.IGNORECASE
)
_SEPARATOR_LINE = re.compile(r"^(?:_{10,}|-{10,})$")
_MOBILE_SIGNATURE = re.compile(r"^(?:Sent from my \S.*|Get Outlook for (?:iOS|Android).*)$", re.IGNORECASE)
_ATTRIBUTION_LINES = 3
MAX_SCANNED_CHARS = 256 * 1024
_OUTLOOK_HEADER_LINES = 6


def strip_reply(text: str) -> str:
    """`text` (LF line endings) without quoted history and signature; "" when nothing new remains.

    Only the first `MAX_SCANNED_CHARS` are read: new text comes first, and the scan must stay cheap on a
    hostile body of millions of short lines.
    """
    lines = text[:MAX_SCANNED_CHARS].split("\n")
    kept: list[str] = []
    index = 0
    while index < len(lines):
        line = lines[index]
        stripped = line.strip()
        if line in ("-- ", "--") or _ORIGINAL_MESSAGE.match(stripped) or _starts_outlook_header(lines, index):
            break
        attribution_end = _attribution_end(lines, index)
        if attribution_end is not None:
            if not _next_text_is_quoted(lines, attribution_end):
                break
            index = attribution_end
            continue
        if not stripped.startswith(">"):
            kept.append(line.rstrip())
        index += 1
    return _trim(_squeeze_blank_lines(kept))


def _attribution_end(lines: list[str], index: int) -> int | None:
    """Index after an attribution starting at `index`, or None when there is none."""
    if not _ATTRIBUTION_START.match(lines[index].lstrip()):
        return None
    for end in range(index + 1, min(index + _ATTRIBUTION_LINES, len(lines)) + 1):
        if not lines[end - 1].rstrip().endswith(":"):
            continue
        candidate = " ".join(part.strip() for part in lines[index:end])
        if len(candidate) > _MAX_ATTRIBUTION_CHARS:
            return None
        if _ATTRIBUTION_END.search(candidate):
            return end
    return None


def _next_text_is_quoted(lines: list[str], start: int) -> bool:
    for line in lines[start:]:
        if line.strip():
            return line.lstrip().startswith(">")
    return True  # nothing follows the attribution


def _starts_outlook_header(lines: list[str], index: int) -> bool:
    if not _OUTLOOK_FROM.match(lines[index].strip()):
        return False
    following = [line.strip() for line in lines[index + 1 : index + _OUTLOOK_HEADER_LINES]]
    has_sent = any(_OUTLOOK_SENT.match(line) for line in following)
    return has_sent and any(_OUTLOOK_TO.match(line) for line in following)


def _trim(lines: list[str]) -> str:
    """Drop blank lines, separator rules and a mobile-client signature from the end."""
    while lines and _is_trailing_noise(lines[-1].strip()):
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    return "\n".join(lines)


def _is_trailing_noise(line: str) -> bool:
    return not line or bool(_SEPARATOR_LINE.match(line) or _MOBILE_SIGNATURE.match(line))


def _squeeze_blank_lines(lines: list[str]) -> list[str]:
    """One blank line where dropped quotes left several."""
    return [line for i, line in enumerate(lines) if line.strip() or i == 0 or lines[i - 1].strip()]
