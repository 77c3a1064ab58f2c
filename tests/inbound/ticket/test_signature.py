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
