"""Is a subject line that of an out-of-office or automatic reply?

Auto-responders without any telling header still announce themselves in the subject, in the language of
the mailbox owner: "Automatic reply: ...", "Out of Office: ...", "Abwesenheitsnotiz", "Réponse automatique",
"Autosvar", "Frånvaro", "Automatisch antwoord", "Respuesta automática", "Risposta automatica",
"Resposta automática", "Odpowiedź automatyczna", "Автоматический ответ", "自動応答", "自动回复", ... in
the languages mail clients ship; Lotus Notes' "AUTO: Name is out of the office"; "This is an automated
response".

Only a subject that *starts* with the phrase counts, and the phrase must end there or be followed by ":",
"(", "-" or the subject it answers; "Re: Out of office" (a person answering an auto-reply) and "Out of office
policy for December" (a person writing about it) stay human.
"""

from __future__ import annotations

import re

MAX_SUBJECT_CHARS = 300
_OUT_OF_OFFICE = (
    # English, German, French, Italian, Spanish, Portuguese, Dutch
    r"out\s+of\s+(?:the\s+)?office(?:\s+(?:reply|autoreply|auto-reply|notice|notification|message))?|ooo|oof"
    r"|on\s+vacation|away\s+from\s+(?:the\s+)?office"
    r"|(?:vacation|holiday|absence)\s+(?:reply|notice|message|auto-?reply)"
    r"|(?:automatische\s+)?abwesenheits(?:notiz|nachricht|meldung|info)|abwesend|nicht\s+im\s+büro|au(?:ß|ss)er\s+haus"
    r"|absence\s+du\s+bureau|absente?\s+du\s+bureau|en\s+congés?|hors\s+du\s+bureau"
    r"|fuori\s+(?:sede|ufficio)|assente|fuera\s+de\s+(?:la\s+)?oficina|ausente(?:\s+d[eo]\s+(?:la\s+)?(?:oficina|escritório))?"
    r"|fora\s+do\s+escritório|afwezig(?:heid)?|niet\s+aanwezig|niet\s+op\s+kantoor|buiten\s+kantoor"
    # Nordic, Finnish, Baltic
    r"|frånvar(?:o|ande)(?:meddelande)?|inte\s+på\s+kontoret|fraværende|fravær|ikke\s+på\s+kontoret|ikke\s+til\s+stede"
    r"|poissa(?:\s+toimistolta)?|lomalla|[āa]rpus\s+biroja(?:\s+atra[šs]an[āa]s)?(?:\s+autom[āa]tisk[āa]\s+atbilde)?"
    r"|ne\s+biure|kontorist\s+väljas"
    # Central and Eastern Europe, Greek, Turkish
    r"|nieobecno[śs][ćc]|nieobecn[ya]|poza\s+biurem|nepřítomnost|nepřítomen|mimo\s+(?:kancelář|kanceláriu|úřad)"
    r"|házon\s+kívül|irodán\s+kívül|în\s+afara\s+biroului|izvan\s+ureda|odsoten|извън\s+офиса"
    r"|вне\s+офиса|нет\s+на\s+месте|отсутству(?:ю|ет)|в\s+отпуске|поза\s+офісом|εκτός\s+γραφείου|ofis\s+dışında"
    # Asian languages
    r"|不在|休暇|休假|外出|부재(?:\s*중)?|ไม่อยู่ที่สำนักงาน|不在办公室"
)
_AUTOMATIC_REPLY = (
    r"auto(?:matic|mated)?[-\s]?(?:reply|response|answer|responder)|auto[-\s]?(?:reply|respond(?:er)?)"
    r"|automatische\s+antwort|réponse\s+automatique|r[ée]ponse\s+auto|autosvar|automatiskt?\s+svar"
    r"|sjálfvirkt\s+svar|automaattinen\s+vastaus|automaatne\s+vastus|automatisch\s+antwoord"
    r"|respuesta\s+autom[áa]tica|risposta\s+automatica|resposta\s+autom[àáa]tica|odpowied[źz]\s+automatyczna"
    r"|automatick[áa]\s+odpov(?:[ěe][dď]|e[dď])|automatikus\s+válasz|r[ăa]spuns\s+automat"
    r"|automatski\s+odgovor|samodejni\s+odgovor|automatinis\s+atsakymas|autom[āa]tisk[āa]\s+atbilde"
    r"|автоматическ(?:ий|ое)\s+(?:ответ|сообщение)|ответ\s+автоматически|автоответ\S*"
    r"|автоматична\s+відповідь|автоматичен\s+отговор|аутоматски\s+одговор"
    r"|otomatik\s+(?:yan[ıi]t|cevap)|αυτόματη\s+απάντηση|תשובה\s+אוטומטית|رد\s+تلقائي"
    r"|trả\s+lời\s+tự\s+động|balasan\s+(?:otomatis|automatik)|ตอบกลับอัตโนมัติ"
    r"|自動応答|自動返信|自动回复|自動回覆|自動回復|자동\s*회신|자동\s*응답"
)
_ENDS_PHRASE = r"(?=\s*(?:$|[:：(\[-]|\s+(?:re|aw|sv|vs|wg|fw|fwd|tr|rv|r)\s*:))"
_I_AM_OUT = re.compile(
    r"^(?:i\s+am|i'm|i\s+will\s+be)\s+(?:currently\s+)?(?:out\s+of\s+(?:the\s+)?office|away|on\s+(?:vacation|leave|holiday))",
    re.IGNORECASE,
)
# Lotus Notes: "AUTO: Smith, John is out of the office (returning 05/01/2010)"; and robots that say so.
_NOTES_AWAY = re.compile(
    r"^AUTO:\s.{0,120}?\s(?:is|ist|est|è|está|estará)\s+(?:out\s+of\s+(?:the\s+)?office|away|absent|on\s+vacation"
    r"|au(?:ß|ss)er\s+haus|abwesend|absente?|fuori\s+ufficio|fuera\s+de\s+la\s+oficina)",
    re.IGNORECASE,
)
_AUTOMATED_NOTICE = re.compile(
    r"^(?:this\s+is\s+an?|an?)\s+automat(?:ed|ic)\s+(?:reply|response|message|e-?mail|notification)\b",
    re.IGNORECASE,
)
_OUT_OF_OFFICE_SUBJECT = re.compile(rf"^\s*\[?(?:{_OUT_OF_OFFICE})\]?{_ENDS_PHRASE}", re.IGNORECASE)
_AUTOMATIC_SUBJECT = re.compile(rf"^\s*\[?(?:{_AUTOMATIC_REPLY})\]?{_ENDS_PHRASE}", re.IGNORECASE)


def subject_reason(subject: str | None) -> str | None:
    """``out-of-office`` or ``auto-reply`` for an auto-responder's subject, else None."""
    subject = (subject or "")[:MAX_SUBJECT_CHARS]
    if _AUTOMATIC_SUBJECT.match(subject):
        return "auto-reply"
    if _AUTOMATED_NOTICE.match(subject.strip()):
        return "auto-reply"
    if (
        _OUT_OF_OFFICE_SUBJECT.match(subject)
        or _I_AM_OUT.match(subject.strip())
        or _NOTES_AWAY.match(subject.strip())
    ):
        return "out-of-office"
    return None
