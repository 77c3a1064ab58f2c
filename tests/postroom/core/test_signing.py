"""The webhook signature scheme, and the verification snippet published in docs/webhook.md."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

import pytest

from postroom.core.signing import SIGNATURE_HEADER, compute_signature, sign, verify

SECRET = "s3cret"
BODY = b'{"schema":"postroom.ticket/1","id":"Q1"}'
NOW = 1_700_000_000
DOCS = Path(__file__).resolve().parents[3] / "docs" / "webhook.md"


def test_header_name_is_the_documented_one() -> None:
    assert SIGNATURE_HEADER == "X-Postroom-Signature"


def test_sign_produces_timestamp_and_hmac_over_timestamp_dot_body() -> None:
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign(SECRET, BODY, NOW) == f"t={NOW},v1={expected}"
    assert compute_signature(SECRET, BODY, NOW) == expected


def test_verify_accepts_its_own_signature() -> None:
    assert verify(SECRET, BODY, sign(SECRET, BODY, NOW), now=NOW + 5)


@pytest.mark.parametrize(
    ("secret", "body"),
    [("other-secret", BODY), (SECRET, BODY + b" "), (SECRET, BODY.replace(b"Q1", b"Q2"))],
    ids=["wrong secret", "appended byte", "altered body"],
)
def test_verify_rejects_wrong_secret_or_altered_body(secret: str, body: bytes) -> None:
    assert not verify(secret, body, sign(SECRET, BODY, NOW), now=NOW)


def test_verify_rejects_a_changed_timestamp() -> None:
    header = sign(SECRET, BODY, NOW).replace(f"t={NOW}", f"t={NOW + 1}")
    assert not verify(SECRET, BODY, header, now=NOW)


@pytest.mark.parametrize(
    ("offset", "valid"), [(-300, True), (300, True), (-301, False), (301, False), (-86400, False)]
)
def test_verify_enforces_the_tolerance_window_both_ways(offset: int, valid: bool) -> None:
    header = sign(SECRET, BODY, NOW + offset)
    assert verify(SECRET, BODY, header, now=NOW) is valid


def test_tolerance_is_configurable() -> None:
    header = sign(SECRET, BODY, NOW - 60)
    assert not verify(SECRET, BODY, header, now=NOW, tolerance=30)
    assert verify(SECRET, BODY, header, now=NOW, tolerance=90)


def test_rotation_signs_with_every_secret_and_either_verifies() -> None:
    header = sign("new-secret", BODY, NOW, old_secrets=["old-secret"])
    assert header.count("v1=") == 2
    assert verify("new-secret", BODY, header, now=NOW)
    assert verify("old-secret", BODY, header, now=NOW)
    assert not verify("unrelated", BODY, header, now=NOW)


def test_unknown_schemes_and_bogus_candidates_are_ignored() -> None:
    good = compute_signature(SECRET, BODY, NOW)
    header = f"t={NOW}, v2=future-scheme, v1=deadbeef, v1=é-not-hex, v1={good}"
    assert verify(SECRET, BODY, header, now=NOW)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        f"v1={'0' * 64}",
        f"t={NOW}",
        f"t=abc,v1={'0' * 64}",
        f"t=+{NOW},v1={'0' * 64}",
        f"t={NOW},t={NOW},v1={'0' * 64}",
        f"t={NOW},v1",
        f"t={NOW}," + ",".join(["v1=00"] * 9),
        f"t={NOW},v1=" + "0" * 5000,
    ],
    ids=[
        "empty",
        "no key",
        "no timestamp",
        "no signature",
        "non-numeric timestamp",
        "signed timestamp",
        "two timestamps",
        "entry without value",
        "too many signatures",
        "oversized header",
    ],
)
def test_malformed_headers_are_rejected_without_raising(header: str) -> None:
    assert not verify(SECRET, BODY, header, now=NOW)


def test_documented_python_snippet_verifies_real_signatures() -> None:
    """docs/webhook.md's stdlib-only snippet must agree with the implementation."""
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.DOTALL)
    snippet = next(block for block in blocks if "def verify_postroom_signature" in block)
    namespace: dict[str, object] = {}
    exec(compile(snippet, str(DOCS), "exec"), namespace)
    documented = namespace["verify_postroom_signature"]
    assert callable(documented)
    header = sign(SECRET, BODY, NOW, old_secrets=["previous"])
    assert documented(SECRET, BODY, header, now=NOW) is True
    assert documented("previous", BODY, header, now=NOW) is True
    assert documented(SECRET, BODY + b"x", header, now=NOW) is False
    assert documented(SECRET, BODY, header, now=NOW + 301) is False
    assert documented(SECRET, BODY, "t=oops", now=NOW) is False
