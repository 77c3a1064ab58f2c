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
        # Outlook's "Automatic reply:" as it ships in other languages
        ("Automatiskt svar: faktura", "auto-reply"),
        ("Automatisk svar: faktura", "auto-reply"),
        ("Automatikus válasz: számla", "auto-reply"),
        ("Răspuns automat: factura", "auto-reply"),
        ("Automatski odgovor: račun", "auto-reply"),
        ("Samodejni odgovor: račun", "auto-reply"),
        ("Automatinis atsakymas: sąskaita", "auto-reply"),
        ("Automātiskā atbilde: rēķins", "auto-reply"),
        ("Automaatne vastus: arve", "auto-reply"),
        ("Automatická odpoveď: faktúra", "auto-reply"),
        ("Resposta automàtica: factura", "auto-reply"),
        ("Автоматична відповідь: рахунок", "auto-reply"),
        ("Автоматичен отговор: фактура", "auto-reply"),
        ("Автоответ: счёт", "auto-reply"),
        ("Ответ автоматически", "auto-reply"),
        ("Otomatik yanıt: fatura", "auto-reply"),
        ("Αυτόματη απάντηση: τιμολόγιο", "auto-reply"),
        ("תשובה אוטומטית: חשבונית", "auto-reply"),
        ("رد تلقائي: فاتورة", "auto-reply"),
        ("Trả lời tự động: hóa đơn", "auto-reply"),
        ("Balasan otomatis: faktur", "auto-reply"),
        ("자동 회신: 청구서", "auto-reply"),
        ("自動返信: 請求書", "auto-reply"),
        ("This is an automated response", "auto-reply"),
        ("An automatic reply from the sales team", "auto-reply"),
        # out-of-office phrases
        ("OOO: traveling", "out-of-office"),
        ("OOF: back on Monday", "out-of-office"),
        ("Fuori ufficio", "out-of-office"),
        ("Nicht im Büro: Rechnung", "out-of-office"),
        ("Automatische Abwesenheitsnachricht", "out-of-office"),
        ("Niet op kantoor: factuur", "out-of-office"),
        ("Ikke på kontoret: faktura", "out-of-office"),
        ("Poza biurem: faktura", "out-of-office"),
        ("Mimo kancelář", "out-of-office"),
        ("Házon kívül: számla", "out-of-office"),
        ("Вне офиса: счёт", "out-of-office"),
        ("Εκτός γραφείου", "out-of-office"),
        ("Ofis dışında", "out-of-office"),
        ("Ārpus biroja automātiskā atbilde: rēķins", "out-of-office"),
        ("Arpus biroja atrasanas automatiska atbilde: rekins", "out-of-office"),
        ("부재중: 청구서", "out-of-office"),
        # Lotus Notes
        ("AUTO: Smith, John is out of the office. (returning 05/01/2010)", "out-of-office"),
        ("AUTO: Hans Muster ist außer Haus. (Rückkehr am 05.01.2010)", "out-of-office"),
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
        "Re: Out of office policy",
        "AW: Abwesenheitsnotiz: Rechnung",
        "Absent from the meeting today?",
        "Auto: car insurance claim",  # "AUTO:" alone is not Notes' away notice
        "Automated testing of our API",
        "Why is there an automated response on my ticket?",
        "Fuera de plazo",
        "On holiday",  # a person telling the helpdesk, as alphagov's test has it
        "Question about the autoreply feature",
        "Invoice 4711",
        "",
    ],
)
def test_human_subjects_stay_human(subject: str) -> None:
    assert subject_reason(subject) is None
