from __future__ import annotations

import pytest

from inbound.ticket.signature import is_mobile_signature, is_signature_delimiter


def test_delimiters() -> None:
    assert is_signature_delimiter("-- ")
    assert is_signature_delimiter("--")
    assert not is_signature_delimiter("---")
    assert not is_signature_delimiter("-- Alice")


@pytest.mark.parametrize(
    "line",
    [
        "Sent from my iPhone",
        "Get Outlook for Android",
        "Gesendet von Outlook für Android<https://aka.ms/x>",
        "Von meinem iPhone gesendet",
        "Envoyé de mon iPad",
        "Enviado desde mi iPhone",
        "Skickat från min iPhone",
        "Sendt fra min iPhone",
        "Sent with Sparrow (http://www.sparrowmailapp.com/?sig)",
        "Отправлено с iPhone",
        "iPhoneから送信",
    ],
)
def test_mobile_signatures(line: str) -> None:
    assert is_mobile_signature(line)


@pytest.mark.parametrize("line", ["Sent from the office yesterday, the parcel", "Sent", "x" * 200])
def test_not_mobile_signatures(line: str) -> None:
    assert not is_mobile_signature(line)


@pytest.mark.parametrize(
    "line",
    [
        "Sent from my iPhone, please excuse typos",
        "Sent from my Galaxy. Sorry for the brevity.",
        "Enviado desde mi móvil",
    ],
)
def test_device_line_with_a_short_excuse_is_a_signature(line: str) -> None:
    assert is_mobile_signature(line)


@pytest.mark.parametrize(
    "line",
    [
        "Sent from my office, which is where I am most days of the week.",
        "Sent from my laptop; the tablet has been broken since the update last month.",
    ],
)
def test_sentence_that_starts_like_a_device_line_is_prose(line: str) -> None:
    assert not is_mobile_signature(line)
