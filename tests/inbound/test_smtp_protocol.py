from __future__ import annotations

import pytest

from inbound.smtp_protocol import with_enhanced_code


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("552 Error: Too much mail data", "552 5.3.4 message size exceeds fixed limit"),
        ("503 Error: need RCPT command", "503 5.5.1 Error: need RCPT command"),
        ("501 Syntax: MAIL FROM: <address>", "501 5.5.4 Syntax: MAIL FROM: <address>"),
        ("250 OK", "250 2.0.0 OK"),
        ("550 5.7.1 relay access denied", "550 5.7.1 relay access denied"),
        ("250-PIPELINING", "250-PIPELINING"),
        ("220 mx.example ESMTP", "220 mx.example ESMTP"),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
        ("499 odd", "499 4.0.0 odd"),
    ],
)
def test_enhanced_codes_are_added_only_where_missing(reply: str, expected: str) -> None:
    assert with_enhanced_code(reply) == expected
