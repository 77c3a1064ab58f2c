"""Attachment records for the ticket: a safe filename, the decoded content's size and SHA-256, and the
content as base64 unless it is larger than the inline limit (then `truncated` is true).
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import re
import unicodedata
from email.message import Message
from typing import Any

from inbound.ticket.field_errors import FieldErrors
from inbound.ticket.mime_text import decode_encoded_words, scrub_surrogates
from inbound.ticket.mime_tree import MimePart, disposition, part_bytes, raw_header
from inbound.ticket.mime_walk import declared_filename

MAX_FILENAME_BYTES = 255  # what common filesystems accept for one path component, in UTF-8
MAX_FILENAME_INPUT_CHARS = (
    4096  # a declared name is cut before normalising: NFKC can expand a character 18-fold
)
_MAX_EXTENSION_CHARS = 16
# Characters Windows refuses in file names; the helpdesk may well store attachments there.
_RESERVED_CHARACTERS = str.maketrans({c: "_" for c in '<>:"|?*'})
# Windows device names, in any case, with or without an extension, with spaces before the dot ("CON .txt");
# superscript digits ("COM¹") reach this as ASCII after NFKC.
_WINDOWS_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$", "CLOCK$"}
    | {f"COM{i}" for i in range(10)}
    | {f"LPT{i}" for i in range(10)}
)
# Control, format (bidi overrides, zero-width), surrogate, private-use, unassigned and line/paragraph
# separator characters.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
# Characters that render as nothing but are letters or marks to Unicode: Hangul fillers, the braille blank,
# the combining grapheme joiner, Khmer inherent vowels, Mongolian and variation selectors.
_INVISIBLE = frozenset(
    "\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5\u180b\u180c\u180d\u180e\u180f"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
    + "".join(chr(c) for c in range(0xE0100, 0xE01F0))
)
# Slashes that NFKC leaves alone but Windows' best-fit code pages turn into "/" or "\\".
_SLASH_LOOKALIKES = str.maketrans(dict.fromkeys("\u2215\u2044\u29f8\u29f5\u29f9\u2571\u2572\ufe68", "/"))
_EXTENSIONS = {
    "text/calendar": ".ics",
    "application/ms-tnef": ".dat",
    "application/vnd.ms-tnef": ".dat",
    "message/rfc822": ".eml",
    "message/global": ".eml",
    "message/delivery-status": ".txt",
    "message/disposition-notification": ".txt",
    "text/rfc822-headers": ".txt",
    "application/pkcs7-signature": ".p7s",
    "application/x-pkcs7-signature": ".p7s",
    "application/pkcs7-mime": ".p7m",
    "application/pgp-signature": ".asc",
    "application/pgp-encrypted": ".asc",
}
# RFC 6838 restricted names, as lower-cased by the parser.
_MEDIA_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
# Built-in table only, so the guess does not depend on the host's /etc/mime.types.
_BUILTIN_TYPES = mimetypes.MimeTypes(filenames=())


def attachment_records(
    parts: list[Message], *, max_inline_bytes: int, errors: FieldErrors | None = None
) -> list[dict[str, Any]]:
    """One record per part; a part whose metadata cannot be read still gets one, with its bytes as found."""
    records = []
    for index, part in enumerate(parts, 1):
        try:
            records.append(attachment_record(part, index, max_inline_bytes=max_inline_bytes))
        except Exception as exc:
            (errors or FieldErrors()).add(f"attachments[{index - 1}]", f"{type(exc).__name__}: {exc}")
            records.append(_bare_record(part, index, max_inline_bytes=max_inline_bytes))
    return records


def _bare_record(part: Message, index: int, *, max_inline_bytes: int) -> dict[str, Any]:
    """The fallback record: undecoded bytes, a made-up name, a generic type."""
    content = part.body if isinstance(part, MimePart) else b""
    inline = len(content) <= max_inline_bytes
    return {
        "filename": f"attachment-{index}.bin",
        "content_type": "application/octet-stream",
        "size": len(content),
        "content_id": None,
        "disposition": "attachment",
        "sha256": hashlib.sha256(content).hexdigest(),
        "content_base64": base64.b64encode(content).decode("ascii") if inline else None,
        "truncated": not inline,
    }


def attachment_record(part: Message, index: int, *, max_inline_bytes: int) -> dict[str, Any]:
    """The ticket's view of one attachment; `index` (from 1) names it when it has no usable name."""
    content = part_bytes(part)
    content_type = _content_type(part)
    inline = len(content) <= max_inline_bytes
    return {
        "filename": sanitize_filename(_declared_filename(part), index=index, content_type=content_type),
        "content_type": content_type,
        "size": len(content),
        "content_id": _content_id(part),
        "disposition": _disposition(part),
        "sha256": hashlib.sha256(content).hexdigest(),
        "content_base64": base64.b64encode(content).decode("ascii") if inline else None,
        "truncated": not inline,
    }


def sanitize_filename(name: str | None, *, index: int, content_type: str) -> str:
    """A file name safe to store anywhere: one path component, printable, bounded, never empty.

    The last path component is kept ("../../etc/passwd" → "passwd"); control and invisible formatting
    characters (including bidi overrides that disguise "exe" as "pdf") and invisible fillers are removed,
    after NFKC normalisation; slash look-alikes count as slashes; leading dots and trailing dots and spaces
    are stripped; Windows device names (also "CON .txt", "CONIN$", "COM¹") get a "_" prefix. An empty
    result becomes "attachment-<index>" with an extension guessed from the content type.
    """
    # NFKC first: fullwidth "／", "．" and superscript digits become the ASCII they stand for, so the checks
    # below see what a filesystem (or Windows' best-fit mapping) would.
    cleaned = "".join(
        ch
        for ch in unicodedata.normalize("NFKC", _bounded(name or ""))
        if unicodedata.category(ch) not in _UNSAFE_CATEGORIES and ch not in _INVISIBLE
    )
    cleaned = cleaned.translate(_SLASH_LOOKALIKES).replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = cleaned.translate(_RESERVED_CHARACTERS).strip().lstrip(".").rstrip(". ")
    if not cleaned:
        return f"attachment-{index}{_guess_extension(content_type)}"
    if cleaned.split(".", 1)[0].rstrip(" ").upper() in _WINDOWS_DEVICE_NAMES:
        cleaned = "_" + cleaned
    return _truncate(cleaned)


def _bounded(name: str) -> str:
    """At most `MAX_FILENAME_INPUT_CHARS`, keeping the end (the extension) of a longer name."""
    if len(name) <= MAX_FILENAME_INPUT_CHARS:
        return name
    return name[: MAX_FILENAME_INPUT_CHARS - _MAX_EXTENSION_CHARS] + name[-_MAX_EXTENSION_CHARS:]


def _truncate(name: str) -> str:
    if len(name.encode("utf-8")) <= MAX_FILENAME_BYTES:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension) > _MAX_EXTENSION_CHARS:
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    budget = MAX_FILENAME_BYTES - len(suffix.encode("utf-8"))
    # Cutting the UTF-8 bytes may split a character; "ignore" drops the partial one.
    return stem.encode("utf-8")[:budget].decode("utf-8", "ignore").rstrip(". ") + suffix


def _content_type(part: Message) -> str:
    """The part's media type, or application/octet-stream when the header does not name a valid one."""
    content_type = part.get_content_type()
    return content_type if _MEDIA_TYPE.fullmatch(content_type) else "application/octet-stream"


def _guess_extension(content_type: str) -> str:
    return _EXTENSIONS.get(content_type) or _BUILTIN_TYPES.guess_extension(content_type) or ".bin"


def _declared_filename(part: Message) -> str | None:
    """The filename the sender gave (RFC 2231 and, non-standard but common, RFC 2047 encoded)."""
    name = declared_filename(part)
    if name:
        return decode_encoded_words(scrub_surrogates(name))
    if part.get_content_type() in ("message/rfc822", "message/global"):
        inner = part.get_payload(0) if part.is_multipart() else None
        subject = raw_header(inner, "subject") if isinstance(inner, Message) else None
        if subject:
            return decode_encoded_words(subject) + ".eml"
    return None


def _content_id(part: Message) -> str | None:
    """Content-ID without its angle brackets, as HTML refers to it ("cid:<value>")."""
    value = raw_header(part, "content-id")
    if value is None:
        return None
    return value.strip().removeprefix("<").removesuffix(">").strip() or None


def _disposition(part: Message) -> str:
    """Either "inline" or "attachment". Without the header, a part with a Content-ID is inline (an image)."""
    declared = disposition(part)
    if declared in ("inline", "attachment"):
        return declared
    return "inline" if declared is None and raw_header(part, "content-id") else "attachment"
