"""The charset of 8-bit body text that declares none, or declares one it does not fit.

Mail without a charset (or with "us-ascii" over 8-bit bytes) is most often UTF-8, then the sender's legacy
code page. UTF-8 is tried first (valid multi-byte UTF-8 is almost never a legacy text by chance); otherwise
charset-normalizer guesses among the code pages mail really uses, on a bounded sample, so one guess costs a
few milliseconds whatever the part's size. The caller bounds how many guesses one message may cost.
"""

from __future__ import annotations

import logging

import charset_normalizer

log = logging.getLogger("postroom.normalize")

SAMPLE_BYTES = 16 * 1024
DEFAULT_CODEPAGE = "cp1252"
# Legacy charsets seen in mail, as Python codec names; nothing exotic that would fit any byte soup.
MAIL_CODEPAGES = (
    "cp1252", "cp1250", "cp1251", "koi8_r", "koi8_u", "iso8859_2", "iso8859_5", "iso8859_7", "cp1253",
    "cp1254", "cp1255", "cp1256", "cp1257", "iso8859_15", "cp874", "gb18030", "big5", "cp932", "euc_jp",
    "cp949",
)  # fmt: skip


def is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def guess_codepage(data: bytes) -> str | None:
    """The likeliest legacy code page of `data` (judged on its first `SAMPLE_BYTES`), or None."""
    sample = data[:SAMPLE_BYTES]
    if len(data) > SAMPLE_BYTES and b"\n" in sample:  # do not end the sample inside a multi-byte character
        sample = sample.rpartition(b"\n")[0]
    try:
        matches = list(charset_normalizer.from_bytes(sample, cp_isolation=list(MAIL_CODEPAGES)))
    except Exception:  # a guess is a nicety: never let it cost the ticket
        log.debug("charset detection failed", exc_info=True)
        return None
    if not matches:
        return None
    best = matches[0]
    # Short Western text fits several code pages equally well: then the one most mail uses wins.
    tied = {m.encoding for m in matches if (m.chaos, m.coherence) == (best.chaos, best.coherence)}
    return DEFAULT_CODEPAGE if DEFAULT_CODEPAGE in tied else str(best.encoding)
