from __future__ import annotations

import pytest

from inbound.ticket.autoreply_subject import subject_reason


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Automatic reply: Your ticket #4711", "auto-reply"),
        ("Auto-Reply: hello", "auto-reply"),
        ("AutoReply", "auto-reply"),
        ("Automatische Antwort: Rechnung", "auto-reply"),
        ("Réponse automatique : facture", "auto-reply"),
        ("Autosvar: faktura", "auto-reply"),
        ("Automaattinen vastaus: lasku", "auto-reply"),
        ("Automatisch antwoord: factuur", "auto-reply"),
        ("Respuesta automática: factura", "auto-reply"),
        ("Risposta automatica: fattura", "auto-reply"),
        ("Resposta automática: fatura", "auto-reply"),
        ("Odpowiedź automatyczna: faktura", "auto-reply"),
        ("Automatická odpověď: faktura", "auto-reply"),
        ("Автоматический ответ: счёт", "auto-reply"),
        ("自動応答: 請求書", "auto-reply"),
        ("自动回复: 发票", "auto-reply"),
        ("Out of Office: Invoice", "out-of-office"),
        ("Out of office reply", "out-of-office"),
        ("Abwesenheitsnotiz: Rechnung", "out-of-office"),
        ("Absence du bureau", "out-of-office"),
        ("Frånvaro: faktura", "out-of-office"),
        ("Fraværende", "out-of-office"),
        ("Afwezig: factuur", "out-of-office"),
        ("Fuera de la oficina: factura", "out-of-office"),
        ("I am out of the office until Monday", "out-of-office"),
    ],
)
def test_auto_responder_subjects(subject: str, expected: str) -> None:
    assert subject_reason(subject) == expected


@pytest.mark.parametrize(
    "subject",
    [
        "Re: Out of Office: Invoice",  # a person answering an auto-reply
        "AW: Automatische Antwort: Rechnung",
        "Out of office policy for December",  # a person writing about it
        "Automatic replies are annoying",
        "Question about the autoreply feature",
        "Invoice 4711",
        "",
    ],
)
def test_human_subjects_stay_human(subject: str) -> None:
    assert subject_reason(subject) is None
