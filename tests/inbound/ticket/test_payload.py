"""The ticket payload: its shape, its JSON bytes, and a schema strict enough to catch mistakes."""

from __future__ import annotations

import copy
import pickle
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]  # no stubs in the venv
import orjson
import pytest

from inbound.ticket.payload import SCHEMA_ID, build_ticket, load_schema, ticket_json, validate_ticket
from tests.inbound.ticket.corpus import context, fixture_names, raw_fixture, ticket_for

DOCS = Path(__file__).resolve().parents[3] / "docs" / "payload.md"
VERDICT = {
    "stage": "data",
    "filter": "rspamd",
    "result": "pass",
    "reason": "",
    "detail": "score 1.2",
    "ms": 3.25,
    "mode": "enforce",
    "action": "accept",
    "failed_open": False,
}
AUTH = {
    "spf": {"result": "pass", "domain": "example.net"},
    "dkim": [{"result": "pass", "domain": "example.net", "selector": "s1"}],
    "dmarc": {"result": "pass", "policy": "reject"},
}
SPAM = {
    "score": 1.2,
    "action": "no action",
    "symbols": ["R_SPF_ALLOW", {"name": "DKIM_SIGNED", "score": 0.0}],
}
VIRUS = {"found": False, "name": None}


def test_every_fixture_gives_a_schema_valid_ticket() -> None:
    for name in fixture_names():
        validate_ticket(build_ticket(raw_fixture(name), context()))


def test_ticket_keys_follow_the_schema_order() -> None:
    ticket = ticket_for("plain-ascii")
    assert list(ticket) == load_schema()["required"]
    assert ticket["schema"] == SCHEMA_ID


def test_context_is_copied_into_the_ticket() -> None:
    ctx = context(verdicts=[VERDICT], auth=AUTH, spam=SPAM, virus=VIRUS, mailbox_hash=None)
    ticket = build_ticket(raw_fixture("plain-ascii"), ctx)
    validate_ticket(ticket)
    assert ticket["id"] == ctx.id
    assert ticket["received_at"] == "2026-11-22T05:40:44.123456Z"
    assert (ticket["tenant"], ticket["mailbox"], ticket["mailbox_hash"]) == ("acme", "support", None)
    assert ticket["envelope"] == ctx.envelope
    assert ticket["envelope"] is not ctx.envelope
    assert (ticket["verdicts"], ticket["auth"], ticket["spam"], ticket["virus"]) == (
        [VERDICT],
        AUTH,
        SPAM,
        VIRUS,
    )


def test_ticket_json_is_the_ticket_as_compact_utf8_json() -> None:
    ticket = ticket_for("utf8-8bit")
    body = ticket_json(ticket)
    assert orjson.loads(body) == ticket
    assert "Grüße".encode() in body  # UTF-8, not \\u escapes
    assert b"\n" not in body


def test_undecodable_session_strings_become_valid_unicode() -> None:
    envelope = {"mail_from": "b\udcffad@example.net", "rcpt_to": ["x\udc80@acme.example"], "client_ip": "",
                "helo": "h\udcfe", "tls": False}  # fmt: skip
    verdict = dict(VERDICT, detail="550 \udcff")
    ticket = build_ticket(raw_fixture("plain-ascii"), context(envelope=envelope, verdicts=[verdict]))
    body = orjson.loads(ticket_json(ticket))
    assert body["envelope"]["mail_from"] == "b\ufffdad@example.net"
    assert body["verdicts"][0]["detail"] == "550 \ufffd"
    validate_ticket(ticket)


def test_context_and_ticket_survive_pickling_for_worker_processes() -> None:
    ctx = context(verdicts=[VERDICT], auth=AUTH)
    assert pickle.loads(pickle.dumps(ctx)) == ctx
    ticket = build_ticket(raw_fixture("calendar-invite"), ctx)
    assert pickle.loads(pickle.dumps(ticket)) == ticket


def test_a_failing_normaliser_still_gives_a_ticket_with_the_raw_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(raw: bytes, **_: Any) -> dict[str, Any]:
        raise RuntimeError("bug")

    monkeypatch.setattr("inbound.ticket.payload.normalize_message", broken)
    ticket = build_ticket(b"Subject: hi\r\n\r\nbody\r\n", context())
    validate_ticket(ticket)
    assert ticket["parse_error"] == "normaliser failed: RuntimeError"
    assert ticket["raw"]["content_base64"] == "U3ViamVjdDogaGkNCg0KYm9keQ0K"
    assert ticket["text"] is None


def test_load_schema_returns_an_independent_copy() -> None:
    schema = load_schema()
    schema["required"].clear()
    assert load_schema()["required"]
    assert load_schema()["properties"]["schema"]["const"] == SCHEMA_ID


MISTAKES: dict[str, Callable[[dict[str, Any]], None]] = {
    "unknown top-level key": lambda t: t.update(extra=1),
    "missing key": lambda t: t.pop("bounce"),
    "wrong schema id": lambda t: t.update(schema="postroom.ticket/2"),
    "local received_at": lambda t: t.update(received_at="2026-11-22T06:40:44+01:00"),
    "date not ISO": lambda t: t.update(date="Mon, 02 Nov 2026 10:15:00 +0100"),
    "empty rcpt_to": lambda t: t["envelope"].update(rcpt_to=[]),
    "client_ip not an address": lambda t: t["envelope"].update(client_ip="mx.example.net"),
    "extra envelope key": lambda t: t["envelope"].update(size=3),
    "message id with brackets": lambda t: t.update(message_id="<abc@example.com>"),
    "address without @": lambda t: t["to"].append({"name": None, "email": "support"}),
    "empty display name": lambda t: t["to"].append({"name": "", "email": "a@example.com"}),
    "path in filename": lambda t: t["attachments"][0].update(filename="../passwd"),
    "leading dot in filename": lambda t: t["attachments"][0].update(filename=".htaccess"),
    "control character in filename": lambda t: t["attachments"][0].update(filename="a\x07b.pdf"),
    "upper-case sha256": lambda t: t["attachments"][0].update(sha256="A" * 64),
    "content although truncated": lambda t: t["attachments"][0].update(truncated=True),
    "no content although not truncated": lambda t: t["attachments"][0].update(content_base64=None),
    "content not base64": lambda t: t["attachments"][0].update(content_base64="not base64!"),
    "unknown disposition": lambda t: t["attachments"][0].update(disposition="form-data"),
    "header as a pair of three": lambda t: t["headers"].append(["X-A", "b", "c"]),
    "unknown auto reason": lambda t: t.update(auto_submitted=True, auto_submitted_reason="maybe"),
    "verdict with unknown stage": lambda t: t["verdicts"].append(dict(VERDICT, stage="queue")),
    "verdict without ms": lambda t: t["verdicts"].append({k: v for k, v in VERDICT.items() if k != "ms"}),
    "auth without dkim": lambda t: t.update(auth={"spf": None, "dmarc": None}),
    "virus without name": lambda t: t.update(virus={"found": True}),
    "negative raw size": lambda t: t["raw"].update(size=-1),
    "empty parse error": lambda t: t.update(parse_error=""),
}


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
def test_schema_rejects_mistakes(mistake: str) -> None:
    ticket = ticket_for("broken-base64")
    validate_ticket(ticket)
    broken = copy.deepcopy(ticket)
    MISTAKES[mistake](broken)
    with pytest.raises(jsonschema.ValidationError):
        validate_ticket(broken)


def test_documented_example_is_a_valid_ticket() -> None:
    example = re.search(r"```json\n(.*?)\n```", DOCS.read_text(encoding="utf-8"), re.DOTALL)
    assert example is not None
    validate_ticket(orjson.loads(example.group(1)))


def _assert_sound(raw: bytes) -> None:
    ticket = build_ticket(raw, context())
    validate_ticket(ticket)
    ticket_json(ticket)
    assert not (ticket["parse_error"] or "").startswith("normaliser failed"), ticket["parse_error"]


def test_random_bytes_never_break_the_normaliser() -> None:
    rng = random.Random(20261122)
    alphabet = b"ab:\r\n\t -=?<>@;\"'\\/\x00\xff\xc3\xa9"  # biased towards bytes with meaning in mail
    for _ in range(250):
        length = rng.randrange(0, 3000)
        if rng.random() < 0.5:
            _assert_sound(rng.randbytes(length))
        else:
            _assert_sound(bytes(rng.choice(alphabet) for _ in range(length)))


def test_mutated_fixtures_never_break_the_normaliser() -> None:
    rng = random.Random(7)
    insertions = [b"\r\n", b"\n", b"--", b"\r\n\r\n", b":", b" ", b"=?", b"?=", b"\x00", b"\xff", b"<", b">"]
    for name in fixture_names():
        original = raw_fixture(name)
        for _ in range(8):
            mutated = bytearray(original)
            for _ in range(rng.randrange(1, 8)):
                if not mutated:
                    break
                index = rng.randrange(len(mutated))
                operation = rng.randrange(3)
                if operation == 0:
                    mutated[index] = rng.randrange(256)
                elif operation == 1:
                    del mutated[index : index + rng.randrange(1, 40)]
                else:
                    mutated[index:index] = rng.choice(insertions)
            _assert_sound(bytes(mutated))
