"""Where quoted history starts in a reply: the markers mail clients write, in many languages.

Each function looks at the lines at one index and costs at most a few bounded lines of lookahead, so a
scan over all lines stays linear. Markers recognised:
- attributions: "On <date>, <name> <addr> wrote:" and translations (the verb list covers English, German,
  French, Spanish, Italian, Portuguese, Dutch, Nordic, Finnish, Polish, Czech, Russian, Ukrainian,
  Vietnamese, Turkish, Greek, Hungarian, Japanese, Chinese, Korean), wrapped over up to `ATTRIBUTION_LINES`
  lines, wrapped in dashes ("---- Name wrote ----", "------On ... wrote-----"), and date-first ones
  with an address and no verb ("2014-10-17 11:28 GMT+03:00 Name <addr>:", "ср, 30 апр. 2025 г. в 15:19,
  Name <addr>:");
- an attribution sharing the last line of the reply ("reply On Wed, ... wrote:");
- "-----Original Message-----" separators and their translations;
- Outlook-style header blocks in those languages ("Från:/Skickat:/Till:/Ämne:", "De :/Envoyé :/À :");
- mailing-list footers ("____\nlist mailing list\nlist@...\nhttp://.../listinfo/...");
- forwarded-message markers, after which nothing is cut: a forward is what the sender wants read.
"""

from __future__ import annotations

import re

ATTRIBUTION_LINES = 6
MAX_ATTRIBUTION_CHARS = 600
_HEADER_BLOCK_LINES = 7
_VERB_TAIL_CHARS = 40
_ADDRESS_TAIL_CHARS = 320

_WROTE = (
    r"wrote|writes|sent|a\s+écrit|écrit|schrieb|schreef|(?:het\s+volgende\s+)?geschreven|skrev|skrivit"
    r"|kirjoitti|kirjutas|napisał\S*|napisao\s+je|napisala|napísal\S*|napsal\S*|pisze|написал\S*|написа|пишет"
    r"|написав\S*|пише|ha\s+scritto|escribió|ha\s+escrit|va\s+escriure|escreveu|đã\s+viết|yazdı|έγραψε"
    r"|(?:ezt\s+)?írta|a\s+scris|rašė|rakstīja|menulis|כתב|كتب|写道|寫道|が書きました|のメッセージ|(?:님이\s+)?작성"
)
_WROTE_END = re.compile(rf"(?:{_WROTE})\s*[:：]?$", re.IGNORECASE)
_WROTE_ALONE = re.compile(rf"^(?:{_WROTE})\s*[:：]$", re.IGNORECASE)
_NAME_AFTER_VERB_END = re.compile(
    r"(?:schrieb|schreef|skrev|napisał\S*|написал\S*)\b.{0,200}:$", re.IGNORECASE
)
_ATTRIBUTION_START = re.compile(
    r"^(?:On|Am|Le|El|Em|Op|Il|In\s+data|Den|På|W\s+dniu|Dnia|Dne|Vào|Pada|Στις|在|\d|\w{2,3},|\w{2,3}\s+\d|"
    r"\w{2,4}\.\s+\d|"
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)\w*,?|[-\s]*-{2,}\s*\S)",
    re.IGNORECASE,
)
# The verb anywhere in a short line ending in a colon, for attributions that start with the name or date
# ("Name <addr> schrieb:", "在 2016年11月8日，Name <addr> 写道：", "Name <addr> ezt írta (időpont: ...):").
_WROTE_ANYWHERE = re.compile(
    rf"(?:(?:^|[\s>)，、,])(?:{_WROTE})|写道|寫道|のメッセージ|작성)(?:$|[\s:：(])", re.IGNORECASE
)
_BRACKETED_ADDRESS = re.compile(r"[<(\[]\s*(?:mailto:)?[\w.+-]+@[\w-]+(?:\.[\w-]+)+\s*[>)\]]")
_BRACKETED_ADDRESS_END = re.compile(r"[<(\[]\s*(?:mailto:)?[\w.+-]+@[\w-]+(?:\.[\w-]+)+\s*[>)\]]\s*[:：]?$")
_START_WORD = re.compile(r"(?:On|Am|Le|El|Em|Op|Il|Den|På|W\s+dniu|Dne)\b", re.IGNORECASE)
_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_DATE = re.compile(r"\d{1,4}[-./]\d{1,2}[-./]\d{1,4}|\d{1,2}:\d{2}|\b(?:19|20)\d\d\b")
_INLINE_ATTRIBUTION = re.compile(r"(?:^|\s|-{2,}\s*)(On\s.{5,300}?\s(?:wrote|sent)\s*:)\s*$")
_ORIGINAL_MESSAGE = re.compile(
    r"^[-=_*\s]*-{2,}\s*(?:Original\s+Message|Reply\s+Message|Antwort\s+Nachricht|Ursprüngliche\s+Nachricht"
    r"|Message\s+d'origine|Message\s+original|Mensaje\s+original|Messaggio\s+originale|Mensagem\s+original"
    r"|Oorspronkelijk\s+bericht|Origineel\s+bericht|Oprindelig\s+(?:besked|meddelelse)|Opprinnelig\s+melding"
    r"|Ursprungligt\s+meddelande|Originalmeddelande|Alkuperäinen\s+viesti|Oryginalna\s+wiadomość"
    r"|Wiadomość\s+oryginalna|Původní\s+zpráva|Исходное\s+сообщение|Оригинальное\s+сообщение"
    r"|Αρχικό\s+μήνυμα|Eredeti\s+üzenet|Orijinal\s+Mesaj|元のメッセージ|原始邮件|原始郵件)\s*-{2,}[-\s]*$",
    re.IGNORECASE,
)
_FORWARDED = re.compile(
    r"^[-\s>]*(?:-{2,}\s*(?:Forwarded\s+message|Weitergeleitete\s+Nachricht|Message\s+transféré"
    r"|Mensaje\s+reenviado|Messaggio\s+inoltrato|Doorgestuurd\s+bericht|Videresendt\s+meddelelse"
    r"|Vidarebefordrat\s+meddelande|Välitetty\s+viesti|Wiadomość\s+przekazana|Пересылаемое\s+сообщение"
    r"|Přeposlaná\s+zpráva)|Begin\s+forwarded\s+message:?)",
    re.IGNORECASE,
)
_HEADER_FROM = (
    r"From|Von|De|Van|Da|Fra|Från|Lähettäjä|Od|Від|От|Kimden|Feladó|Frá|Từ"
    r"|差出人|发件人|寄件者|發件人|보낸\s*사람"
)
_HEADER_OTHER = (
    r"Sent|Date|To|Cc|Subject|Gesendet|Datum|An|Betreff|Envoyé|À|A|Objet|Enviado|Para|Asunto|Fecha|Verzonden"
    r"|Aan|Onderwerp|Inviato|Oggetto|Data|Sendt|Dato|Til|Emne|Skickat|Till|Ämne|Lähetetty|Päivämäärä"
    r"|Vastaanottaja|Aihe|Wysłano|Wysłane|Do|Temat|Odesláno|Komu|Předmět|Отправлено|Дата|Кому|Тема"
    r"|Надіслано|Gönderildi|Tarih|Kime|Konu|Elküldve|Címzett|Tárgy|Ngày|Đến|Chủ\s+đề|Message\s+du"
    r"|送信日時|宛先|件名|日期|发送时间|收件人|主题|寄件日期|收件者|主旨"
)
_HEADER_FROM_LINE = re.compile(rf"^\*?(?:{_HEADER_FROM})\s*\*?\s?[:：]", re.IGNORECASE)
_HEADER_LINE = re.compile(rf"^\*?(?:{_HEADER_FROM}|{_HEADER_OTHER})\s*\*?\s?[:：]", re.IGNORECASE)
_INLINE_HEADER = re.compile(r"\s(?:Date|Sent|To|Subject)\s?:\s*\S")
_LIST_FOOTER_RULE = re.compile(r"^_{2,}$")
_LIST_FOOTER_TEXT = re.compile(r"mailing\s+list|/listinfo/|unsubscribe", re.IGNORECASE)


def is_forward_marker(line: str) -> bool:
    return bool(_FORWARDED.match(line.strip()))


def is_original_message(line: str) -> bool:
    return bool(_ORIGINAL_MESSAGE.match(line.strip()))


def attribution_end(lines: list[str], index: int) -> int | None:
    """The index after an attribution starting at `index`, or None when there is none."""
    first = lines[index].strip()
    if not first or first.startswith(">"):
        return None
    if not _ATTRIBUTION_START.match(first):
        return _loose_attribution_end(lines, index)
    parts: list[str] = []
    # "---- Name wrote ----" stands on one line: a dashed line is never read as the start of a wrapped one,
    # which also keeps runs of "--..." lines (MIME boundaries in text) from costing a window each.
    window = 1 if first.startswith("--") else ATTRIBUTION_LINES
    for end in range(index + 1, min(index + window, len(lines)) + 1):
        part = lines[end - 1].strip().lstrip(">").strip() if end > index + 1 else first
        parts.append(part)
        candidate = " ".join(p for p in parts if p).strip("-* ").strip()
        if len(candidate) > MAX_ATTRIBUTION_CHARS:
            return None
        if _is_attribution(candidate, dashed=first.startswith("--")):
            # "... Name <addr>" wrapped before a lone "wrote:" (Polymail): the verb line belongs to it.
            if end < len(lines) and _WROTE_ALONE.match(lines[end].strip().lstrip(">").strip()):
                return end + 1
            return end
        if not part and end > index + 2:  # two lines on and still blank: not one wrapped attribution
            return None
    return None


def _loose_attribution_end(lines: list[str], index: int) -> int | None:
    """An attribution that starts with neither a known word nor a date: one line ending in a colon, naming
    the verb and an address, with a date or the address bracketed (so "I told bob@example.com what you
    wrote:" stays text). A line that holds the end of the reply before "On ... wrote:" is left to
    `inline_attribution_start`."""
    candidate = lines[index].strip()
    if not candidate.endswith((":", "：")) or len(candidate) > MAX_ATTRIBUTION_CHARS // 2:
        return None
    if inline_attribution_start(candidate) is not None or _HEADER_LINE.match(candidate):
        return None
    if not (_WROTE_ANYWHERE.search(candidate) and _ADDRESS.search(candidate)):
        return None
    return index + 1 if _BRACKETED_ADDRESS.search(candidate) or _DATE.search(candidate) else None


def _is_attribution(candidate: str, *, dashed: bool) -> bool:
    if _WROTE_END.search(candidate[-_VERB_TAIL_CHARS:]):  # the tail only: the verb ends the candidate
        if _DATE.search(candidate) or _ADDRESS.search(candidate):
            return True
        # Without a date or an address, only "On ..., Name wrote:" or "---- Name wrote ----" count: "sent"
        # alone is too common a word.
        return not candidate.lower().rstrip(":：").endswith("sent") and bool(
            dashed or _START_WORD.match(candidate)
        )
    if candidate.endswith(":") and _NAME_AFTER_VERB_END.search(candidate):
        return True
    # Date first, then a name and a bracketed address, no verb: "2014-10-17 11:28 GMT+03:00 Name <addr>:".
    # The brackets keep "On 2 May we sent it to bob@example.com:" a sentence.
    return (
        bool(_BRACKETED_ADDRESS_END.search(candidate[-_ADDRESS_TAIL_CHARS:]))
        and bool(_DATE.search(candidate[:80]))
        and not _HEADER_LINE.match(candidate)
    )


def inline_attribution_start(line: str) -> int | None:
    """Where an attribution begins inside a line that also holds the end of the reply, or None."""
    match = _INLINE_ATTRIBUTION.search(line)
    if match is None or match.start(1) == 0:
        return None
    return match.start(1)


def starts_header_block(lines: list[str], index: int) -> bool:
    """A "From:" line (any language) with at least two more header lines within the next few lines, or a
    "Date:"/"Sent:" line followed by two more (some clients put the date first)."""
    line = lines[index].strip()
    if not _HEADER_LINE.match(line):
        return False
    following = [item.strip() for item in lines[index + 1 : index + _HEADER_BLOCK_LINES]]
    headers = sum(1 for item in following if _HEADER_LINE.match(item))
    if _HEADER_FROM_LINE.match(line):
        # "From: a@example.com Date: ..." on one line: an HTML header block rendered without its breaks.
        same_line = bool(_ADDRESS.search(line)) and bool(_INLINE_HEADER.search(line))
        return headers >= 2 or (headers >= 1 and bool(_ADDRESS.search(line))) or same_line
    # A date-first block ("Date:", then "To: addr"): two header lines, one naming an address.
    addressed = any(_HEADER_LINE.match(item) and _ADDRESS.search(item) for item in following[:2])
    return headers >= 3 or (headers >= 1 and addressed and bool(_DATE.search(line)))


def starts_list_footer(lines: list[str], index: int) -> bool:
    if not _LIST_FOOTER_RULE.match(lines[index].strip()):
        return False
    return any(_LIST_FOOTER_TEXT.search(line) for line in lines[index + 1 : index + 4])
