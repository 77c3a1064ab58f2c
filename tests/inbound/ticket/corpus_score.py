"""Score the normaliser against the regression corpus of real-world mail (fixtures/mail/corpus).

Every source directory holds `expectations.json`: the expectations its upstream project states in its own
tests, mapped onto ticket fields as fixtures/mail/corpus/README.md describes. This module builds a ticket for
every message and inline case, runs each expectation as one check, and reports pass rates by category.

    python -m tests.inbound.ticket.corpus_score [--verbose] [--category C] [--source NAME[,NAME]] [--json]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import html
import json
import re
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inbound.ticket.payload import TicketContext, build_ticket

CORPUS = Path(__file__).resolve().parents[3] / "fixtures" / "mail" / "corpus"

CATEGORIES = (
    "bounce_detection",
    "bounce_recipients",
    "bounce_detail",
    "auto_reply",
    "reply_text",
    "headers",
    "bodies",
    "attachments",
)
DEFAULT_MAIL_FROM = "sender@example.net"
CASE_FROM = "Corpus Sender <sender@example.net>"
CASE_TO = "support@acme.helpdesk.example"


def make_ticket(raw: bytes, *, mail_from: str) -> dict[str, Any]:
    """The one place that calls the normaliser."""
    context = TicketContext(
        id="20261122T054044Z-corpus",
        received_at="2026-11-22T05:40:44.123456Z",
        tenant="acme",
        mailbox="support",
        mailbox_hash=None,
        envelope={
            "mail_from": mail_from,
            "rcpt_to": [CASE_TO],
            "client_ip": "192.0.2.10",
            "helo": "mail.example.net",
            "tls": True,
        },
    )
    return build_ticket(raw, context)


# ------------------------------------------------------------------------------------------ comparison rules


def normalise_text(value: str) -> str:
    """CRLF/CR -> LF, trailing whitespace of every line removed, then leading/trailing blank lines and outer
    whitespace stripped. Inner blank lines are kept as they are."""
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in value.split("\n")).strip()


def squash_whitespace(value: str) -> str:
    """Every whitespace character removed (talon compares HTML results this way)."""
    return re.sub(r"\s+", "", value)


def html_to_visible_text(value: str) -> str:
    """Tags dropped, entities decoded: the visible text of HTML, for whitespace-free comparison."""
    value = re.sub(r"(?is)<(script|style|head)\b.*?</\1\s*>", " ", value)
    return html.unescape(re.sub(r"<[^>]*>", " ", value))


def same_addresses(expected: list[str], got: list[str]) -> bool:
    """Address lists compare as sets, case-insensitively."""
    return {a.strip().lower() for a in expected} == {a.strip().lower() for a in got}


def strip_mbox_from_line(raw: bytes) -> bytes:
    """Drop a leading mbox `From ` separator line, which never arrives over SMTP."""
    if raw.startswith(b"From "):
        newline = raw.find(b"\n")
        return raw[newline + 1 :] if newline >= 0 else b""
    return raw


def wrap_case(case_id: str, body: str, content_type: str) -> bytes:
    """A minimal message around an inline body: UTF-8, base64, so every byte of the body survives."""
    encoded = base64.encodebytes(body.encode("utf-8")).decode("ascii")
    safe_id = re.sub(r"[^A-Za-z0-9.]+", "-", case_id).strip("-") or "case"
    head = (
        f"From: {CASE_FROM}\r\n"
        f"To: {CASE_TO}\r\n"
        f"Subject: corpus case {case_id}\r\n"
        "Date: Tue, 10 Nov 2026 12:00:00 +0000\r\n"
        f"Message-ID: <{safe_id}@corpus.example>\r\n"
        "MIME-Version: 1.0\r\n"
        f"Content-Type: {content_type}; charset=utf-8\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return head.encode("ascii") + encoded.replace("\n", "\r\n").encode("ascii")


# ------------------------------------------------------------------------------------------------- checks


@dataclass
class Check:
    category: str
    item: str
    name: str
    ok: bool
    expected: Any = None
    got: Any = None


@dataclass
class Item:
    """One message or inline case with its expectations."""

    source: str
    name: str
    raw: bytes
    mail_from: str
    expect: dict[str, Any]


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    items: int = 0
    no_ticket: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def totals(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for category in CATEGORIES:
            mine = [c for c in self.checks if c.category == category]
            passed = sum(c.ok for c in mine)
            out[category] = {"passed": passed, "total": len(mine), "rate": rate(passed, len(mine))}
        passed = sum(c.ok for c in self.checks)
        out["total"] = {"passed": passed, "total": len(self.checks), "rate": rate(passed, len(self.checks))}
        return out


def rate(passed: int, total: int) -> float:
    return round(100.0 * passed / total, 2) if total else 100.0


def _get(ticket: dict[str, Any], *path: str) -> Any:
    value: Any = ticket
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


class _Missing:
    def __repr__(self) -> str:
        return "<field absent from ticket>"


_MISSING = _Missing()


def _emails(mailboxes: Any) -> list[str]:
    if not isinstance(mailboxes, list):
        return []
    return [m["email"] for m in mailboxes if isinstance(m, dict) and isinstance(m.get("email"), str)]


def text_checks(expected: dict[str, Any], got: Any, category: str, item: str, label: str) -> Iterator[Check]:
    """Checks of one text field: equals / equals_nows / text_equals_nows / contains / not_contains."""
    text = got if isinstance(got, str) else None
    for rule, want in expected.items():
        if rule == "equals":
            ok = text is not None and normalise_text(text) == normalise_text(want)
        elif rule == "equals_nows":
            ok = text is not None and squash_whitespace(text) == squash_whitespace(want)
        elif rule == "text_equals_nows":
            ok = text is not None and squash_whitespace(html_to_visible_text(text)) == squash_whitespace(want)
        elif rule == "contains":
            for needle in want:
                yield Check(
                    category, item, f"{label} contains", text is not None and needle in text, needle, got
                )
            continue
        elif rule == "not_contains":
            for needle in want:
                yield Check(
                    category, item, f"{label} lacks", text is not None and needle not in text, needle, got
                )
            continue
        else:
            raise ValueError(f"{item}: unknown text rule {rule!r}")
        yield Check(category, item, f"{label} {rule}", ok, want, got)


def detail_checks(expected: list[dict[str, Any]], got: Any, item: str) -> Iterator[Check]:
    """bounce.recipients_detail: each expected entry's keys checked against the entry with the same email
    (case-insensitive), or against any entry when the expectation names no email."""
    entries = [e for e in got if isinstance(e, dict)] if isinstance(got, list) else []
    for want in expected:
        email = want.get("email")
        if email is not None:
            candidates = [e for e in entries if str(e.get("email", "")).lower() == email.lower()]
        else:
            candidates = entries
        for key in ("status", "kind", "reason"):
            if key not in want:
                continue
            values = [c.get(key) for c in candidates]
            if key == "status":
                ok = any(isinstance(v, str) and v.strip() == want[key] for v in values)
            else:
                ok = want[key] in values
            shown = got if got is _MISSING else values
            yield Check(
                "bounce_detail", item, f"recipients_detail[{email or '*'}].{key}", ok, want[key], shown
            )


def check_item(item: Item, ticket: dict[str, Any]) -> Iterator[Check]:
    name = f"{item.source}/{item.name}"
    expect = item.expect
    bounce = expect.get("bounce", {})
    if "is_bounce" in bounce:
        got = _get(ticket, "bounce", "is_bounce")
        yield Check(
            "bounce_detection", name, "bounce.is_bounce", got == bounce["is_bounce"], bounce["is_bounce"], got
        )
    if "recipients" in bounce:
        got = _get(ticket, "bounce", "recipients")
        ok = isinstance(got, list) and same_addresses(bounce["recipients"], got)
        yield Check("bounce_recipients", name, "bounce.recipients", ok, bounce["recipients"], got)
    if "type" in bounce:
        got = _get(ticket, "bounce", "type")
        yield Check("bounce_detail", name, "bounce.type", got == bounce["type"], bounce["type"], got)
    if "recipients_detail" in bounce:
        yield from detail_checks(
            bounce["recipients_detail"], _get(ticket, "bounce", "recipients_detail"), name
        )
    if "auto_submitted" in expect:
        got = _get(ticket, "auto_submitted")
        yield Check(
            "auto_reply",
            name,
            "auto_submitted",
            got == expect["auto_submitted"],
            expect["auto_submitted"],
            got,
        )
    if "reply_text" in expect:
        got = _get(ticket, "stripped_text_reply")
        yield from text_checks(expect["reply_text"], got, "reply_text", name, "stripped_text_reply")
    for future in ("stripped_html_reply", "stripped_signature"):
        if future in expect:
            yield from text_checks(expect[future], _get(ticket, future), "reply_text", name, future)
    yield from header_checks(expect.get("headers", {}), ticket, name)
    yield from body_checks(expect.get("bodies", {}), ticket, name)
    yield from attachment_checks(expect.get("attachments", {}), ticket, name)


def header_checks(expected: dict[str, Any], ticket: dict[str, Any], name: str) -> Iterator[Check]:
    for key, want in expected.items():
        if key == "subject":
            got: Any = ticket.get("subject")
            ok = got == want
        elif key == "from_email":
            got = _get(ticket, "from", "email")
            ok = isinstance(got, str) and got.lower() == want.lower()
        elif key == "from_name":
            got = _get(ticket, "from", "name")
            ok = got == want
        elif key in ("to", "cc", "reply_to"):
            got = _emails(ticket.get(key))
            ok = same_addresses(want, got) and len(got) == len(want)
        elif key in ("message_id", "date"):
            got = ticket.get(key)
            ok = got == want
        elif key == "to_names":
            mailboxes = ticket.get("to")
            got = (
                [m.get("name") for m in mailboxes if isinstance(m, dict)]
                if isinstance(mailboxes, list)
                else []
            )
            ok = got == want
        else:
            raise ValueError(f"{name}: unknown header expectation {key!r}")
        yield Check("headers", name, key, ok, want, got)


def body_checks(expected: dict[str, Any], ticket: dict[str, Any], name: str) -> Iterator[Check]:
    for key, want in expected.items():
        if key in ("text_contains", "html_contains"):
            field_name = key.split("_")[0]
            got = ticket.get(field_name)
            for needle in want:
                ok = isinstance(got, str) and needle in got
                yield Check("bodies", name, f"{field_name} contains", ok, needle, got)
        elif key in ("text_not_contains", "html_not_contains"):
            field_name = key.split("_")[0]
            got = ticket.get(field_name)
            for needle in want:
                ok = isinstance(got, str) and needle not in got
                yield Check("bodies", name, f"{field_name} lacks", ok, needle, got)
        elif key in ("text_not_null", "html_not_null"):
            field_name = key.split("_")[0]
            got = ticket.get(field_name)
            yield Check("bodies", name, key, (got is not None) == want, want, got)
        else:
            raise ValueError(f"{name}: unknown body expectation {key!r}")


def _content(attachment: dict[str, Any]) -> bytes | None:
    data = attachment.get("content_base64")
    return base64.b64decode(data) if isinstance(data, str) else None


def attachment_checks(expected: dict[str, Any], ticket: dict[str, Any], name: str) -> Iterator[Check]:
    got_list = [a for a in ticket.get("attachments") or [] if isinstance(a, dict)]
    if "count" in expected:
        yield Check(
            "attachments",
            name,
            "attachments count",
            len(got_list) == expected["count"],
            expected["count"],
            len(got_list),
        )
    for want in expected.get("items", []):
        filename = want["filename"]
        match = next((a for a in got_list if a.get("filename") == filename), None)
        shown = [a.get("filename") for a in got_list]
        yield Check(
            "attachments", name, f"attachment {filename!r} present", match is not None, filename, shown
        )
        for key in ("content_type", "size", "disposition"):
            if key in want:
                got = match.get(key) if match else None
                yield Check(
                    "attachments", name, f"attachment {filename!r} {key}", got == want[key], want[key], got
                )
        if "md5" in want:
            data = _content(match) if match else None
            got_md5 = hashlib.md5(data).hexdigest() if data is not None else None
            yield Check(
                "attachments",
                name,
                f"attachment {filename!r} md5",
                got_md5 == want["md5"],
                want["md5"],
                got_md5,
            )
        if "contains" in want:
            data = _content(match) if match else None
            ok = data is not None and want["contains"].encode("utf-8") in data
            yield Check("attachments", name, f"attachment {filename!r} contains", ok, want["contains"], None)


# ------------------------------------------------------------------------------------------------- corpus


def load_items(corpus: Path = CORPUS, sources: frozenset[str] | None = None) -> Iterator[Item]:
    """Every message and case of the corpus, or of the named source directories only."""
    for expectations in sorted(corpus.glob("*/expectations.json")):
        source_dir = expectations.parent
        if sources is not None and source_dir.name not in sources:
            continue
        data = json.loads(expectations.read_text(encoding="utf-8"))
        for rel, expect in sorted(data.get("messages", {}).items()):
            raw = strip_mbox_from_line((source_dir / rel).read_bytes())
            yield Item(source_dir.name, rel, raw, expect.get("mail_from", DEFAULT_MAIL_FROM), expect)
        for case in data.get("cases", []):
            if "body_file" in case:
                body = (source_dir / case["body_file"]).read_text(encoding="utf-8")
            else:
                body = case["body"]
            raw = wrap_case(case["id"], body, case.get("content_type", "text/plain"))
            yield Item(source_dir.name, "case:" + case["id"], raw, DEFAULT_MAIL_FROM, case["expect"])


def score(corpus: Path = CORPUS, sources: frozenset[str] | None = None) -> Report:
    started = time.perf_counter()
    report = Report()
    for item in load_items(corpus, sources):
        report.items += 1
        try:
            ticket = make_ticket(item.raw, mail_from=item.mail_from)
        except Exception as exc:
            report.no_ticket.append((f"{item.source}/{item.name}", f"{type(exc).__name__}: {exc}"))
            ticket = {}
        report.checks.extend(check_item(item, ticket))
    report.seconds = time.perf_counter() - started
    return report


def _short(value: Any, start: int = 0, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=repr)
    prefix = "…" if start > 0 else ""
    text = prefix + text[start:].replace("\n", "\\n")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _first_difference(a: Any, b: Any) -> int:
    """Where two strings start to differ, less some context; 0 for anything else."""
    if not (isinstance(a, str) and isinstance(b, str)):
        return 0
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return max(0, n - 40)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--verbose", action="store_true", help="list every failing check")
    parser.add_argument("--category", choices=CATEGORIES, help="only this category")
    parser.add_argument("--json", action="store_true", help="print the totals as JSON")
    parser.add_argument(
        "--source", metavar="NAME[,NAME]", help="only these source directories (e.g. a held-out set)"
    )
    args = parser.parse_args(argv)
    sources = None
    if args.source:
        sources = frozenset(name.strip() for name in args.source.split(",") if name.strip())
        unknown = sorted(sources - {p.parent.name for p in CORPUS.glob("*/expectations.json")})
        if unknown:
            parser.error(f"no such source: {', '.join(unknown)}")
    report = score(sources=sources)
    totals = report.totals()
    if args.category:
        totals = {args.category: totals[args.category]}
    if args.json:
        out = {"items": report.items, "no_ticket": len(report.no_ticket), "seconds": round(report.seconds, 2)}
        print(json.dumps({**out, "categories": totals}, indent=2))
    else:
        print(f"{report.items} messages and cases, {len(report.checks)} checks, {report.seconds:.1f} s")
        for category, t in totals.items():
            print(f"{category:<18} {t['rate']:6.2f}%  {int(t['passed']):>5} / {int(t['total'])}")
        print(f"{'no_ticket':<18} {len(report.no_ticket):>7}")
    if args.verbose:
        for item, error in report.no_ticket:
            print(f"NO TICKET {item}: {error}")
        for c in report.checks:
            if not c.ok and (args.category is None or c.category == args.category):
                at = _first_difference(c.expected, c.got)
                print(f"FAIL {c.category} {c.item} :: {c.name}")
                print(f"    expected: {_short(c.expected, at)}\n    got:      {_short(c.got, at)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
