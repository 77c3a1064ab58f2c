"""Values written into a header field Postroom composes.

CVE-2024-6923: the email package of the interpreters Postroom runs on (3.11 before 3.11.10) writes a
header value containing CR or LF as is, so a decoded value put back into a header can start a header of its
own. Postroom composes its headers as text, and every value that came from outside goes through
`header_value` first: a line break (or NUL) there is refused, never folded, stripped or passed on.
"""

from __future__ import annotations

import re

_LINE_BREAKING = re.compile("[\x00\r\n\x0b\x0c\x85\u2028\u2029]")


class HeaderInjection(ValueError):
    """A value meant for a header field contains a line break."""


def header_value(value: str, field: str) -> str:
    """`value`, unchanged, if it can sit on one header line; else HeaderInjection naming `field`."""
    if _LINE_BREAKING.search(value):
        raise HeaderInjection(f"{field}: a line break in a header value, refused: {value[:80]!r}")
    return value
