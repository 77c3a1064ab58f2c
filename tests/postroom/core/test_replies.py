from __future__ import annotations

from pathlib import Path

import pytest

from postroom.core.replies import FILTER_REPLIES, GENERIC_FAIL, GENERIC_TEMPFAIL, Reply, reply_for

DOCS = Path(__file__).resolve().parents[3] / "docs" / "filters.md"


def test_fail_takes_its_reasons_reply_even_a_temporary_one() -> None:
    assert reply_for("spf.fail", temporary=False).render() == "550 5.7.23 SPF validation failed"
    assert reply_for("spam.greylist", temporary=False).code == 451
    assert reply_for("no.such.reason", temporary=False) is GENERIC_FAIL


def test_temperror_never_gives_a_permanent_reply() -> None:
    assert reply_for("spf.temperror", temporary=True).render().startswith("451 4.7.24")
    assert reply_for("virus.found", temporary=True) is GENERIC_TEMPFAIL
    assert reply_for("clamav.timeout", temporary=True) is GENERIC_TEMPFAIL


@pytest.mark.parametrize("detail", ["line\r\nbreak", "tab\there", "x" * 1000])
def test_reply_text_stays_one_printable_line(detail: str) -> None:
    rendered = Reply(554, "5.7.1", "blocked").render(detail)
    assert "\r" not in rendered and "\n" not in rendered and len(rendered) < 420


def test_every_reason_is_documented() -> None:
    text = DOCS.read_text()
    missing = [reason for reason in FILTER_REPLIES if f"`{reason}`" not in text]
    assert not missing
