"""The `postroom` command: every answer is output or one clear error line, never a traceback."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from inbound.ticket.payload import validate_ticket
from postroom.app.cli import main
from postroom.core.envelope import SpoolEnvelope
from postroom.core.spool import DEAD, INCOMING, DeliveryState, Spool, encode_message, new_queue_id
from tests.support import tomlwrite
from tests.support.harness import config_mapping, message


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    return tomlwrite.write(
        tmp_path / "postroom.toml", config_mapping(tmp_path / "spool", "http://127.0.0.1:9/t")
    )


def _dead_letter(spool: Spool, tenant: str, reason: str, status: int) -> str:
    envelope = SpoolEnvelope(
        id=new_queue_id(),
        tenant=tenant,
        mailbox="support",
        received_at="2026-11-22T06:00:00Z",
        mail_from="a@b.c",
    )
    (queue_id,) = spool.store([(envelope.to_meta(), message(tenant))])
    spool.move(queue_id, INCOMING, DEAD)
    spool.save_state(
        queue_id, DeliveryState(attempts=1, dead_reason=reason, dead_at=spool.clock(), last_status=status)
    )
    return queue_id


def test_check_prints_one_schema_valid_ticket_per_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "a.eml", tmp_path / "b.eml"
    first.write_bytes(message("first"))
    second.write_bytes(message("second"))
    assert main(["check", str(first), str(second), "--tenant", "acme", "--mail-from", "ada@example.org"]) == 0
    lines = capsys.readouterr().out.splitlines()
    tickets = [json.loads(line) for line in lines]
    assert [t["subject"] for t in tickets] == ["first", "second"]
    for ticket in tickets:
        validate_ticket(ticket)
        assert ticket["tenant"] == "acme" and ticket["envelope"]["mail_from"] == "ada@example.org"


def test_check_missing_file_is_one_line_and_nonzero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "/no/such.eml"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == "postroom: /no/such.eml: No such file or directory"


def test_bad_config_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[webhook]\nurl = "http://x/t"\ntimeout = "soon"\n')
    assert main(["queue", "--config", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (
        "postroom: config error: webhook.timeout: expected a number, got 'soon'"
    )


def test_unparsable_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[smtp\n")
    assert main(["queue", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("postroom: config error: ") and "not valid TOML" in err and err.count("\n") == 1


def test_queue_shows_states_and_tenant_rows(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spool = Spool(config_path.parent / "spool").create()
    spool.store([({"tenant": "acme"}, b"x"), ({"tenant": "acme"}, b"y"), ({"tenant": "globex"}, b"z")])
    assert main(["queue", "--config", str(config_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    shape = report["inbound"]
    assert shape["states"]["incoming"]["count"] == 3
    rows = {row["tenant"]: row for row in shape["rows"]}
    assert rows["TOTAL"]["total"] == 3
    assert rows["acme"]["total"] == 2 and rows["acme"]["buckets"][0] == 2 and rows["globex"]["total"] == 1
    assert "outbound" not in report  # no relay configured, no outbound spool
    assert main(["queue", "--config", str(config_path)]) == 0
    text = capsys.readouterr().out
    assert "INBOUND QUEUE" in text and "acme" in text and "TOTAL" in text


def test_queue_shows_the_outbound_queue_by_destination(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outbound = Spool(config_path.parent / "spool" / "outbound").create()
    outbound.store([({"kind": "outbound", "domain": "gmail.com"}, b"x"), ({"domain": "example.org"}, b"y")])
    assert main(["queue", "--config", str(config_path), "--json"]) == 0
    rows = {row["domain"]: row for row in json.loads(capsys.readouterr().out)["outbound"]["rows"]}
    assert rows["TOTAL"]["total"] == 2 and rows["gmail.com"]["states"] == {"incoming": 1}
    assert main(["queue", "--config", str(config_path)]) == 0
    assert "OUTBOUND QUEUE" in capsys.readouterr().out


def test_dead_letter_list_filters_and_show(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spool = Spool(config_path.parent / "spool").create()
    acme = _dead_letter(spool, "acme", "http 400", 400)
    globex = _dead_letter(spool, "globex", "http 422", 422)
    assert main(["dead-letter", "list", "--config", str(config_path), "--json"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {row["id"] for row in listed} == {acme, globex}
    assert main(["dead-letter", "list", "--config", str(config_path), "--json", "--tenant", "globex"]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == [globex]
    assert main(["dead-letter", "list", "--config", str(config_path), "--reason", "400"]) == 0
    out = capsys.readouterr().out
    assert acme in out and globex not in out
    assert main(["dead-letter", "show", acme, "--config", str(config_path)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["delivery"]["dead_reason"] == "http 400" and shown["meta"]["tenant"] == "acme"


def test_dead_letter_replay_and_purge(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spool = Spool(config_path.parent / "spool").create()
    acme = _dead_letter(spool, "acme", "http 400", 400)
    globex = _dead_letter(spool, "globex", "http 400", 400)
    dry_run = ["dead-letter", "replay", "--all", "--tenant", "acme", "--dry-run", "-c", str(config_path)]
    assert main(dry_run) == 0
    assert f"would replay {acme}" in capsys.readouterr().out
    assert spool.locate(acme) == DEAD
    assert main(["dead-letter", "replay", acme, "-c", str(config_path)]) == 0
    assert spool.locate(acme) == INCOMING
    state = spool.load_state(acme)
    assert state.replays == 1 and state.dead_reason == "" and state.attempts == 1
    assert main(["dead-letter", "purge", "--all", "-c", str(config_path)]) == 0
    assert "purged 1 message(s)" in capsys.readouterr().out
    assert spool.locate(globex) is None


def test_dead_letter_errors_are_one_line(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dead-letter", "replay", "0018F2A6B3C4D5E6ABC", "-c", str(config_path)]) == 1
    assert (
        capsys.readouterr().err.strip() == "postroom: 0018F2A6B3C4D5E6ABC is not in the dead-letter directory"
    )
    assert main(["dead-letter", "replay", "-c", str(config_path)]) == 1
    assert "name the messages" in capsys.readouterr().err
    assert main(["dead-letter", "purge", "X", "--all", "-c", str(config_path)]) == 1
    assert "either IDs or --all" in capsys.readouterr().err
    assert main(["dead-letter", "list", "--since", "yesterday", "-c", str(config_path)]) == 1
    assert "--since" in capsys.readouterr().err


def test_check_takes_the_sender_from_the_file_unless_told(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain, bounced = tmp_path / "plain.eml", tmp_path / "bounced.eml"
    plain.write_bytes(message("plain"))
    bounced.write_bytes(b"Return-Path: <>\r\n" + message("bounced"))
    assert main(["check", str(plain), str(bounced)]) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["envelope"]["mail_from"] == "ada@example.org" and first["auto_submitted"] is False
    assert second["envelope"]["mail_from"] == "" and second["auto_submitted"] is True
    assert main(["check", str(plain), "--mail-from", ""]) == 0
    assert json.loads(capsys.readouterr().out)["envelope"]["mail_from"] == ""


@pytest.mark.parametrize("text", ["NOPE", "../../etc/passwd", "/etc/passwd", "0018F2A6B3C4D5E6AB\0", "", "*"])
def test_queue_ids_on_the_command_line_are_checked_before_any_lookup(
    config_path: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    for command in (["show", text], ["replay", text], ["purge", text]):
        assert main(["dead-letter", *command, "-c", str(config_path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("postroom: not a queue id: ") and err.count("\n") == 1, err
    assert main(["trace", text, "-c", str(config_path)]) == 2
    assert "not a queue id" in capsys.readouterr().err


def test_a_symlink_planted_in_dead_is_neither_shown_listed_nor_replayed(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool = Spool(config_path.parent / "spool").create()
    outside = tmp_path / "outside.msg"  # a spool-format file outside the spool: the link's target
    outside.write_bytes(encode_message({"tenant": "acme"}, b"Subject: secret\r\n\r\nroot:x:0:0\r\n"))
    planted = new_queue_id()
    (spool.root / DEAD / f"{planted}.msg").symlink_to(outside)
    fifo = new_queue_id()
    os.mkfifo(spool.root / DEAD / f"{fifo}.msg")
    real = _dead_letter(spool, "acme", "http 400", 400)

    assert main(["dead-letter", "list", "--json", "-c", str(config_path)]) == 0
    assert [json.loads(line)["id"] for line in capsys.readouterr().out.splitlines()] == [real]
    for queue_id in (planted, fifo):
        for command in ("show", "replay", "purge"):
            assert main(["dead-letter", command, queue_id, "-c", str(config_path)]) == 1
            captured = capsys.readouterr()
            assert "root:x" not in captured.out and captured.err.count("\n") == 1, captured
    assert main(["dead-letter", "replay", "--all", "-c", str(config_path)]) == 0
    assert spool.ids(INCOMING) == [real]
    assert (spool.root / DEAD / f"{planted}.msg").is_symlink() and outside.exists()
    assert spool.claim(planted, now=spool.clock()) is None  # the runner skips one in incoming/ too


def test_serve_refuses_a_public_or_short_webhook_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for secret, problem in (("change-me", "public default"), ("x", "1 bytes"), ("a" * 31, "31 bytes")):
        mapping = config_mapping(tmp_path / "spool", "http://127.0.0.1:9/t")
        mapping["webhook"]["secret"] = secret
        path = tomlwrite.write(tmp_path / "weak.toml", mapping)
        assert main(["serve", "-c", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("postroom: config error: webhook.secret: ") and problem in err, err
        assert err.count("\n") == 1
    # Commands that sign nothing still run with a weak secret.
    assert main(["queue", "-c", str(path)]) == 0
