"""Where a signature starts in the new text of a reply.

Two kinds are recognised:
- the delimiter line "-- " (RFC 3676), or "--" as clients that trim trailing spaces send it: the signature
  is the lines after it;
- a mobile client's one-line signature ("Sent from my iPhone", "Get Outlook for Android", "Gesendet von
  Outlook für Android", "Envoyé de mon iPhone", ...): the line itself. Such a line ends the new text: what
  follows it is the quoted history those clients append without a header.
The signature is returned to the helpdesk as `stripped_signature`, as Mailgun does, rather than dropped.
"""

from __future__ import annotations

import re

MAX_SIGNATURE_LINE_CHARS = 160
MAX_EXCUSE_WORDS = 6
_CLAUSE_BREAK = re.compile(r"[,;.!?]\s")
_MOBILE_SIGNATURE = re.compile(
    r"^(?:Sent\s+from\s+(?:my\s+\S|Samsung|Outlook|Mail\s+for|Yahoo|Yandex|AOL|ProtonMail|BlackBerry)"
    r"|Sent\s+with\s+(?:Sparrow|Airmail|Spark|ProtonMail)|Get\s+Outlook\s+for\s+(?:iOS|Android)"
    r"|Envoyé\s+de\s+mon|Envoyé\s+depuis|Enviado\s+desde\s+mi|Enviado\s+do\s+meu|Enviado\s+de\s+meu"
    r"|Gesendet\s+von\s+(?:meinem|Outlook|Mail|iPhone)|Von\s+meinem\s+\S+\s+gesendet|Inviato\s+da"
    r"|Verzonden\s+(?:vanaf|met)\s+(?:mijn|Outlook)|Sendt\s+fra\s+min|Skickat\s+från\s+min"
    r"|Lähetetty\s+(?:iPhonesta|Androidista|Outlookista)|Wysłane\s+z\s+(?:mojego|iPhone)|Odesláno\s+z"
    r"|Отправлено\s+(?:с|из)\s+|Надіслано\s+з\s+|iPhoneから送信|从我的\S*发送|發自我的)",
    re.IGNORECASE,
)


def is_signature_delimiter(line: str) -> bool:
    return line.rstrip("\r") in ("-- ", "--")


def is_mobile_signature(line: str) -> bool:
    stripped = line.strip()
    match = _MOBILE_SIGNATURE.match(stripped) if len(stripped) <= MAX_SIGNATURE_LINE_CHARS else None
    return match is not None and not _is_sentence(stripped[match.end() :])


def _is_sentence(rest: str) -> bool:
    """Whether the words after a "Sent from my" prefix are prose rather than a device name and a short
    excuse ("iPhone, please excuse typos"): a clause of more than `MAX_EXCUSE_WORDS` words after the
    first comma or full stop, as in "Sent from my desk, is much easier than my phone."."""
    clause = _CLAUSE_BREAK.split(rest, maxsplit=1)
    return len(clause) == 2 and len(clause[1].split()) > MAX_EXCUSE_WORDS
