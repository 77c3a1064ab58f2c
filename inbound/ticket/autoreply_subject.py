"""Is a subject line that of an out-of-office or automatic reply?

Auto-responders without any telling header still announce themselves in the subject, in the language of
the mailbox owner: "Automatic reply: ...", "Out of Office: ...", "Abwesenheitsnotiz", "Réponse automatique",
"Autosvar", "Frånvaro", "Automatisch antwoord", "Respuesta automática", "Risposta automatica",
"Resposta automática", "Odpowiedź automatyczna", "Автоматический ответ", "自動応答", "自动回复", ...

Only a subject that *starts* with the phrase counts, and the phrase must end there or be followed by ":",
"(", "-" or the subject it answers; "Re: Out of office" (a person answering an auto-reply) and "Out of office
policy for December" (a person writing about it) stay human.
"""

from __future__ import annotations

import re

MAX_SUBJECT_CHARS = 300
_OUT_OF_OFFICE = (
    r"out\s+of\s+(?:the\s+)?office(?:\s+(?:reply|autoreply|notice|notification|message))?|ooo|on\s+vacation"
    r"|vacation\s+(?:reply|notice|message|auto-?reply)|abwesenheitsnotiz|abwesend|nicht\s+im\s+büro"
    r"|absence\s+du\s+bureau|absent(?:e)?\s+du\s+bureau|en\s+congés?|frånvaro(?:meddelande)?|fraværende"
    r"|fravær|poissa|ikke\s+til\s+stede|afwezig(?:heid)?|niet\s+aanwezig|fuera\s+de\s+(?:la\s+)?oficina"
    r"|ausente|fuori\s+(?:sede|ufficio)|assente|ausente\s+do\s+escritório|fora\s+do\s+escritório"
    r"|nieobecność|poza\s+biurem|nepřítomnost|mimo\s+kancelář|вне\s+офиса|отсутствую|в\s+отпуске"
    r"|不在|休暇|休假|外出|부재"
)
_AUTOMATIC_REPLY = (
    r"auto(?:matic|mated)?[-\s]?(?:reply|response|answer)|auto[-\s]?(?:reply|respond(?:er)?)"
    r"|automatische\s+antwort|réponse\s+automatique|r[ée]ponse\s+auto|autosvar|automatisk\s+svar"
    r"|automaattinen\s+vastaus|automatisch\s+antwoord|respuesta\s+autom[áa]tica|risposta\s+automatica"
    r"|resposta\s+autom[áa]tica|odpowied[źz]\s+automatyczna|automatick[áa]\s+odpov[ěe][dď]"
    r"|автоматический\s+ответ|автоответ|otomatik\s+yan[ıi]t|αυτόματη\s+απάντηση|automatikus\s+válasz"
    r"|自動応答|自動返信|自动回复|自動回覆|自動回復|자동\s*회신|자동\s*응답"
)
_ENDS_PHRASE = r"(?=\s*(?:$|[:：(\[-]|\s+(?:re|aw|sv|vs|wg|fw|fwd|tr|rv|r)\s*:))"
_I_AM_OUT = re.compile(
    r"^(?:i\s+am|i'm|i\s+will\s+be)\s+(?:currently\s+)?(?:out\s+of\s+(?:the\s+)?office|away|on\s+(?:vacation|leave|holiday))",
    re.IGNORECASE,
)
_OUT_OF_OFFICE_SUBJECT = re.compile(rf"^\s*\[?(?:{_OUT_OF_OFFICE})\]?{_ENDS_PHRASE}", re.IGNORECASE)
_AUTOMATIC_SUBJECT = re.compile(rf"^\s*\[?(?:{_AUTOMATIC_REPLY})\]?{_ENDS_PHRASE}", re.IGNORECASE)


def subject_reason(subject: str | None) -> str | None:
    """``out-of-office`` or ``auto-reply`` for an auto-responder's subject, else None."""
    subject = (subject or "")[:MAX_SUBJECT_CHARS]
    if _AUTOMATIC_SUBJECT.match(subject):
        return "auto-reply"
    if _OUT_OF_OFFICE_SUBJECT.match(subject) or _I_AM_OUT.match(subject.strip()):
        return "out-of-office"
    return None
