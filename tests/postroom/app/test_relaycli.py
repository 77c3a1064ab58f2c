"""`postroom hash-password`, `postroom suppression ...` and `postroom dkim-keygen`, through their parsers."""

from __future__ import annotations

import argparse
import asyncio
import io
import secrets
import time
from pathlib import Path

import orjson
import pytest
import redis.asyncio

from outbound.dkim import dns_txt_value
from outbound.passwords import verify_password
from outbound.suppression import RedisSuppressionList, open_suppression
from postroom.app.config import Config, config_from_mapping
from postroom.app.relaycli import parse_duration, register
from tests.servers.daemon import free_port
from tests.servers.redis import RedisServer


def run(argv: list[str], cfg: Config, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="postroom")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    args.config_obj = cfg
    code = args.handler(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cfg(tmp_path: Path) -> Config:
    return config_from_mapping({"spool": {"path": str(tmp_path / "spool")}})


def test_hash_password_reads_the_first_line_of_stdin(
    cfg: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("pa ss wörd\r\nignored second line\n"))
    code, out, err = run(["hash-password"], cfg, capsys)
    assert (code, err) == (0, "")
    assert out.startswith("scrypt$") and out.count("\n") == 1
    assert verify_password("pa ss wörd", out.strip())


def test_hash_password_refuses_empty_input_and_passwords_in_argv(
    cfg: Config, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert run(["hash-password"], cfg, capsys) == (2, "", "postroom: error: empty password\n")
    with pytest.raises(SystemExit) as usage:
        run(["hash-password", "hunter2"], cfg, capsys)
    assert usage.value.code == 2


def test_suppression_add_list_remove_round_trip(cfg: Config, capsys: pytest.CaptureFixture[str]) -> None:
    before = time.time()
    code, out, _ = run(
        ["suppression", "add", "Bob@Example.COM", "--for", "12h", "--reason", "asked"], cfg, capsys
    )
    assert (code, out) == (0, "suppressed Bob@Example.COM for 43200 s\n")
    assert run(["suppression", "add", "carol@example.org"], cfg, capsys)[0] == 0

    code, out, _ = run(["suppression", "list", "--json"], cfg, capsys)
    listed = orjson.loads(out)
    assert [(e["address"], e["source"], e["reason"]) for e in listed] == [
        ("Bob@example.com", "cli", "asked"),
        ("carol@example.org", "cli", "added by operator"),
    ]
    assert before + 43200 <= listed[0]["expires_at"] <= time.time() + 43200
    assert listed[1]["expires_at"] is None

    code, out, _ = run(["suppression", "list"], cfg, capsys)
    lines = out.splitlines()
    assert lines[0].split() == ["ADDRESS", "EXPIRES", "(UTC)", "SOURCE", "REASON"]
    assert lines[2].split() == ["carol@example.org", "never", "cli", "added", "by", "operator"]

    assert run(["suppression", "remove", "bob@example.com"], cfg, capsys) == (
        0,
        "removed bob@example.com\n",
        "",
    )
    assert asyncio.run(open_suppression(cfg, None).lookup("bob@example.com")) is None


def test_suppression_errors_are_one_line_with_exit_code_2(
    cfg: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["suppression", "remove", "nobody@example.com"], cfg, capsys) == (
        2,
        "",
        "postroom: error: nobody@example.com is not suppressed\n",
    )
    code, _, err = run(["suppression", "add", "not-an-address"], cfg, capsys)
    assert (code, err) == (2, "postroom: error: not an email address: 'not-an-address'\n")
    with pytest.raises(SystemExit):
        run(["suppression", "add", "a@example.com", "--for", "-5"], cfg, capsys)
    assert "not a positive duration: '-5'" in capsys.readouterr().err

    down = config_from_mapping({"redis": {"url": f"redis://127.0.0.1:{free_port()}/0"}})
    code, out, err = run(["suppression", "list"], down, capsys)
    assert code == 2 and out == ""
    assert err.startswith("postroom: error: suppression list in Redis unavailable") and err.count("\n") == 1


def test_suppression_commands_use_redis_when_configured(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config_from_mapping({"redis": {"url": redis_server.url}})
    address = f"cli-{secrets.token_hex(4)}@example.com"
    assert run(["suppression", "add", address, "--for", "60"], cfg, capsys)[0] == 0

    async def check() -> None:
        client = redis.asyncio.from_url(redis_server.url)
        try:
            suppression = open_suppression(cfg, client)
            assert isinstance(suppression, RedisSuppressionList)
            entry = await suppression.lookup(address)
            assert entry is not None and entry.source == "cli"
            assert await suppression.remove(address)
        finally:
            await client.aclose()

    asyncio.run(asyncio.wait_for(check(), timeout=30))


def test_dkim_keygen_writes_a_key_and_prints_its_record(
    tmp_path: Path, cfg: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "mail-out.test.pem"
    code, out, _ = run(
        ["dkim-keygen", "--domain", "Mail-Out.Test", "--out", str(key), "--bits", "1024"], cfg, capsys
    )
    assert code == 0
    record = out.splitlines()[1]
    assert record.startswith('postroom._domainkey.mail-out.test. IN TXT "v=DKIM1; k=rsa; p=')
    assert "".join(record.split('"')[1::2]) == dns_txt_value(key.read_bytes())

    code, _, err = run(["dkim-keygen", "--domain", "x.test", "--out", str(key)], cfg, capsys)
    assert (code, err) == (2, f"postroom: error: {key} exists; refusing to overwrite a key\n")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("15m", 900), ("12h", 43200), ("1.5d", 129600)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "5w", "h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)
