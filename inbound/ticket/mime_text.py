"""Bytes and header text → clean Unicode, best effort and never raising.

Every string that leaves the normaliser passes through here, so the ticket can always be serialised as
UTF-8 JSON: unknown or lying charsets are decoded with replacement characters, RFC 2047 encoded-words are
decoded leniently (bad padding, unknown charsets, missing terminators), and lone surrogates (which some
Python codecs can produce, and which orjson refuses) are replaced.
"""

from __future__ import annotations

import binascii
import codecs
import re
from functools import lru_cache

from inbound.ticket.charset_detect import guess_codepage, is_utf8

# Labels that promise less than senders deliver: read them as the superset every mail client uses (the
# WHATWG encoding table does the same for web pages).
_SUPERSET_CODECS = {
    "iso-8859-1": "cp1252",
    "iso8859-1": "cp1252",
    "iso_8859-1": "cp1252",
    "latin1": "cp1252",
    "latin-1": "cp1252",
    "l1": "cp1252",
    "iso-8859-9": "cp1254",
    "iso-8859-11": "cp874",
    "tis-620": "cp874",
    "iso-2022-jp": "iso2022_jp_ext",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "big5": "big5hkscs",
    "euc-kr": "cp949",
    "ks_c_5601-1987": "cp949",
    "iso-8859-8-i": "iso8859_8",
    "unicode-1-1-utf-7": "utf_7",
}
# No charset, or one that promises only ASCII: the bytes are sniffed (UTF-8, else Windows-1252).
_SNIFFED_LABELS = frozenset(
    {"", "us-ascii", "ascii", "us", "ansi_x3.4-1968", "unknown", "unknown-8bit", "x-unknown"}
)
# Python text codecs that are not mail charsets; the escape codecs would let a body fabricate surrogates.
_REFUSED_CODECS = frozenset(
    {"unicode-escape", "raw-unicode-escape", "punycode", "idna", "undefined", "charmap"}
)

# Labels whose bytes are not ASCII-compatible: never second-guessed.
_WIDE_CODECS = frozenset({"utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be", "utf-7"})

_SURROGATE = re.compile("[\ud800-\udfff]")
# A fold is a line break before whitespace: CRLF, or a bare LF or CR (both occur in the wild).
_FOLDING = re.compile(r"(?:\r\n|\r|\n)(?=[ \t])")
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")
# C0 controls but tab, DEL and C1 controls: in a header value they can only smuggle (a CR/LF or NUL in a
# subject the helpdesk reuses in its reply is a header injection).
_CONTROLS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_ENCODED_WORD = re.compile(
    # charset, optional RFC 2231 language, encoding, text; a missing "?=" is tolerated at a word's end.
    r"=\?([^?\s*]{1,64})(?:\*[^?\s]{0,32})?\?([bBqQ])\?([^?\s]*)(?:\?=|(?=\s|$))"
)
_Q_WORD = re.compile(r"=\?[^?\s*]{1,64}(?:\*[^?\s]{0,32})?\?[qQ]\?[^?\s]*\?=")
_RAW_BYTE = re.compile("[\udc80-\udcff]")
_BODY_CONTROLS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
_NOT_BASE64 = bytes(b for b in range(256) if b not in _BASE64_ALPHABET)
_LINE_WHITESPACE = b" \t\r\n"


@lru_cache(maxsize=256)
def _codec_for(charset: str | None) -> str | None:
    """The Python codec to use for a MIME charset label; None means "sniff the bytes"."""
    label = (charset or "").strip().strip("\"'").lower()
    if label in _SNIFFED_LABELS:
        return None
    label = _SUPERSET_CODECS.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError):
        return None
    # Bytes-to-bytes codecs (base64, zlib, ...) are flagged by the codec registry itself.
    if info.name in _REFUSED_CODECS or not info._is_text_encoding:
        return None
    return info.name


def decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode `data` labelled with `charset`; never raises, never returns lone surrogates."""
    if not data:
        return ""
    codec = _codec_for(charset)
    candidates: tuple[str, ...]
    if codec is None:
        codec = "cp1252"  # reached only when the UTF-8 attempt below fails
        candidates = ("utf-8", codec)
    else:
        # A declared charset that does not fit is most often UTF-8 mislabelled by the sending client.
        candidates = (codec,) if codec == "utf-8" else (codec, "utf-8")
    for candidate in candidates:
        try:
            return scrub_surrogates(data.decode(candidate))
        except UnicodeDecodeError:
            continue
    return scrub_surrogates(data.decode(codec, "replace"))


def decode_body_text(data: bytes, charset: str | None, *, may_guess: bool) -> tuple[str, bool]:
    """Body text: (decoded, whether a charset guess was spent). Bytes that are valid UTF-8 are read as
    UTF-8 whatever the label says (clients mislabel UTF-8 far more than anything else); otherwise the label
    is trusted when the bytes fit it, and a missing or unfitting label makes charset-normalizer guess
    (when `may_guess`; the caller bounds the guesses per message)."""
    if data.isascii() or _codec_for(charset) in _WIDE_CODECS:
        return decode_bytes(data, charset), False
    if is_utf8(data):
        return scrub_surrogates(data.decode("utf-8")), False
    codec = _codec_for(charset)
    if codec is not None:
        try:
            return scrub_surrogates(data.decode(codec)), False
        except UnicodeDecodeError:
            pass
    guess = guess_codepage(data) if may_guess else None
    if guess is None:
        return decode_bytes(data, charset), may_guess
    return scrub_surrogates(data.decode(guess, "replace")), True


def scrub_surrogates(text: str) -> str:
    """Join surrogate pairs and replace lone surrogates by U+FFFD, so the text encodes as UTF-8."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def header_str(raw_value: str) -> str:
    """A raw header value from the stdlib parser (8-bit bytes smuggled as surrogates) → unfolded Unicode.

    Raw 8-bit header bytes are UTF-8 when the client speaks SMTPUTF8, otherwise usually Windows-1252.
    Encoded-words are left alone: address parsing must see them in their lexical context.
    """
    value = raw_value
    if _SURROGATE.search(value):
        # Raw 8-bit bytes inside a Q encoded-word belong to the word's declared charset: spell them as
        # "=XX" so the word decodes them; the rest of the value is sniffed (UTF-8, else Windows-1252).
        value = _Q_WORD.sub(_escape_raw_bytes, value)
    if _SURROGATE.search(value):
        value = decode_bytes(value.encode("utf-8", "surrogateescape"), None)
    if "\n" in value or "\r" in value:
        value = _LINE_BREAKS.sub(" ", _FOLDING.sub("", value))
    return value.strip()


def _escape_raw_bytes(word: re.Match[str]) -> str:
    return _RAW_BYTE.sub(lambda byte: f"={ord(byte.group()) - 0xDC00:02X}", word.group())


def clean_body_text(text: str) -> str:
    """Body text without the control characters that mean nothing in text (NUL, escape, ...): JSON would
    spell each as six bytes, and many helpdesk databases refuse NUL. Tab and newline stay."""
    if not _BODY_CONTROLS.search(text):
        return text
    return _BODY_CONTROLS.sub("", text)


def clean_header_text(text: str) -> str:
    """A decoded header value or display name without control characters: line breaks become spaces,
    other controls (tab aside) are dropped, so nothing read from a header can start a new header line."""
    if not _CONTROLS.search(text):
        return text
    return _CONTROLS.sub("", _LINE_BREAKS.sub(" ", text))


def decode_base64_lenient(data: bytes) -> bytes:
    """Base64 as found in the wild: stray characters are ignored, padding may be missing or repeated mid-way.

    Well-formed input takes the strict decoder, the fastest one. Otherwise chunks separated by padding are
    decoded one by one (concatenated base64 blobs are common), and a dangling sextet that cannot form a
    byte is dropped.
    """
    try:
        return binascii.a2b_base64(data.translate(None, _LINE_WHITESPACE), strict_mode=True)
    except binascii.Error:
        pass
    cleaned = data.translate(None, _NOT_BASE64)
    decoded = bytearray()
    for chunk in cleaned.split(b"="):
        usable = len(chunk) - (1 if len(chunk) % 4 == 1 else 0)
        if usable <= 0:
            continue
        padded = chunk[:usable] + b"=" * (-usable % 4)
        decoded += binascii.a2b_base64(padded)
    return bytes(decoded)


def decode_encoded_words(text: str) -> str:
    """Decode RFC 2047 encoded-words anywhere in `text`, leniently.

    Whitespace between adjacent words is dropped (RFC 2047 section 6.2), and the bytes of consecutive
    words in the same charset are decoded together: clients split multi-byte characters across words.
    """
    if "=?" not in text:
        return text
    out: list[str] = []
    pending = bytearray()
    pending_charset = ""
    position = 0
    for match in _ENCODED_WORD.finditer(text):
        gap = text[position : match.start()]
        charset, encoding, payload = match.group(1).lower(), match.group(2).lower(), match.group(3)
        adjacent = position > 0 and not gap.strip()
        if not adjacent or charset != pending_charset:
            if pending:
                out.append(decode_bytes(bytes(pending), pending_charset))
                pending.clear()
            if not adjacent:
                out.append(gap)
        word = payload.encode("ascii", "replace")
        pending += decode_base64_lenient(word) if encoding == "b" else binascii.a2b_qp(word, header=True)
        pending_charset = charset
        position = match.end()
    if pending:
        out.append(decode_bytes(bytes(pending), pending_charset))
    out.append(text[position:])
    return "".join(out)


def normalize_newlines(text: str) -> str:
    """CRLF and bare CR → LF, the one line ending used in the ticket's text fields."""
    if "\r" not in text:
        return text
    return text.replace("\r\n", "\n").replace("\r", "\n")
