"""Class 4 of issue 13: filenames are sanitised after NFKC, against what Windows and its best-fit mapping
would make of them."""

from __future__ import annotations

import pytest

from inbound.ticket.attachments import sanitize_filename


@pytest.mark.parametrize(
    ("declared", "safe"),
    [
        ("CON .txt", "_CON .txt"),
        ("con  .tar.gz", "_con  .tar.gz"),
        ("CONIN$", "_CONIN$"),
        ("conout$.log", "_conout$.log"),
        ("CLOCK$", "_CLOCK$"),
        ("COM¹", "_COM1"),
        ("LPT³.txt", "_LPT3.txt"),
        ("COM0.txt", "_COM0.txt"),
        ("ＣＯＮ.txt", "_CON.txt"),  # fullwidth letters
        ("..／..／etc／passwd", "passwd"),  # fullwidth solidus
        ("a∕b∕evil.exe", "evil.exe"),  # division slash
        ("a⁄evil.exe", "evil.exe"),  # fraction slash
        ("..＼..＼evil.dll", "evil.dll"),  # fullwidth reverse solidus
        ("．bashrc", "bashrc"),  # fullwidth full stop
        ("\u3164.pdf", "pdf"),  # Hangul filler: an invisible name
        ("in\u115fvoice\u1160.pdf", "invoice.pdf"),
        ("\uffa0\u2800report.pdf", "report.pdf"),
        ("re\u200bport\u200d.pdf", "report.pdf"),  # zero-width space and joiner
        ("invoice\u202egpj.exe", "invoicegpj.exe"),  # right-to-left override
        ("photo\u034f.jpg\ufe0f", "photo.jpg"),  # combining grapheme joiner, variation selector
    ],
)
def test_filenames_are_safe_after_nfkc(declared: str, safe: str) -> None:
    assert sanitize_filename(declared, index=1, content_type="application/pdf") == safe


@pytest.mark.parametrize("declared", ["\u3164", "\u115f\u1160", "\u200b\u200b", "／"])
def test_a_name_of_only_invisible_or_path_characters_is_replaced(declared: str) -> None:
    assert sanitize_filename(declared, index=3, content_type="application/pdf") == "attachment-3.pdf"


def test_a_name_that_nfkc_expands_stays_within_the_byte_limit() -> None:
    name = sanitize_filename("\ufdfa" * 5000 + ".pdf", index=1, content_type="application/pdf")
    assert len(name.encode()) <= 255 and name.endswith(".pdf")
