"""`postroom block add|list|remove` on the spool file and on Redis, and what the server makes of it."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from filters.blocklist import LocalBlockList, blocklist_path
from postroom.app import blockcli
from postroom.app.config import Config
from tests.filters.throttle_harness import Backend, ManualClock, connect
from tests.servers.daemon import free_port
from tests.servers.redis import RedisServer

pytestmark = pytest.mark.integration


def run(config: Config, *argv: str) -> int:
    parser = argparse.ArgumentParser(prog="postroom")
    blockcli.register(parser.add_subparsers())
    args = parser.parse_args(["block", *argv])
    args.config_obj = config
    code: int = args.handler(args)
    return code


def file_config(tmp_path: Path) -> Config:
    config = Config()
    config.spool.path = str(tmp_path / "spool")
    return config


def redis_config(url: str) -> Config:
    config = Config()
    config.redis.url = url
    config.filters.throttle.redis_key_prefix = Backend("redis").prefix
    return config


@pytest.fixture(params=["file", "redis"])
def config(request: pytest.FixtureRequest, tmp_path: Path) -> Config:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return redis_config(server.url)
    return file_config(tmp_path)


def test_add_list_remove(config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config, "add", "127.0.0.66", "--for", "120", "--reason", "abuse report 12") == 0
    assert capsys.readouterr().out.startswith("blocked 127.0.0.66/32 until ")
    assert run(config, "add", "10.1.2.3/16") == 0
    capsys.readouterr()

    assert run(config, "list") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NETWORK", "EXPIRES", "(UTC)", "SOURCE", "REASON"]
    assert [line.split()[0] for line in lines[1:]] == ["10.1.0.0/16", "127.0.0.66/32"]
    assert lines[2].endswith("manual  abuse report 12")

    assert run(config, "list", "--json") == 0
    listed = json.loads(capsys.readouterr().out)
    default = next(e for e in listed if e["network"] == "10.1.0.0/16")
    assert default["expires_at"] - default["created_at"] == config.filters.throttle.block_duration
    assert default["reason"] == "blocked by operator"

    assert run(config, "remove", "127.0.0.66") == 0
    assert capsys.readouterr().out == "removed 127.0.0.66/32\n"
    assert run(config, "list", "--json") == 0
    assert [e["network"] for e in json.loads(capsys.readouterr().out)] == ["10.1.0.0/16"]


def test_empty_list(config: Config, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(config, "list") == 0
    assert capsys.readouterr().out == "block-list is empty\n"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("add", "not-an-ip"), "not an IP address or CIDR network: 'not-an-ip'"),
        (("add", "127.0.0.66", "--for", "0"), "--for must be a positive number of seconds, got 0"),
        (("remove", "127.0.0.77"), "no block-list entry for 127.0.0.77/32"),
    ],
)
def test_errors_are_one_line_and_exit_2(
    config: Config, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    assert run(config, *argv) == 2
    captured = capsys.readouterr()
    assert captured.err == f"postroom block: {message}\n"
    assert captured.out == ""


def test_unreachable_redis_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    config = redis_config(f"redis://127.0.0.1:{free_port()}/0")
    assert run(config, "list") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"postroom block: redis at {config.redis.url} unavailable: ")
    assert err.count("\n") == 1


def test_corrupt_file_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = file_config(tmp_path)
    path = blocklist_path(config)
    path.parent.mkdir(parents=True)
    path.write_text("[1, 2")
    assert run(config, "add", "127.0.0.66") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"postroom block: {path}: unreadable block-list: ")
    assert err.count("\n") == 1
    assert path.read_text() == "[1, 2"  # never overwritten


def test_running_server_refuses_a_client_blocked_from_the_cli(tmp_path: Path) -> None:
    config = file_config(tmp_path)
    config.filters.throttle.blocklist_file = str(blocklist_path(config))
    clock = ManualClock()

    async def connect_once(session: str) -> str | None:
        async with Backend("memory").throttle(
            clock, blocklist_file=config.filters.throttle.blocklist_file
        ) as flt:
            decision, _ = await connect(flt, "127.0.0.66", session)
            return decision.reason if decision else None

    assert asyncio.run(connect_once("before")) is None
    assert run(config, "add", "127.0.0.0/24") == 0
    assert asyncio.run(connect_once("after")) == "throttle.blocked"
    entries = asyncio.run(LocalBlockList(blocklist_path(config)).entries(clock()))
    assert [e.network for e in entries] == ["127.0.0.0/24"]


def test_running_redis_node_refuses_a_client_blocked_from_the_cli(redis_server: RedisServer) -> None:
    config = redis_config(redis_server.url)
    backend = Backend("redis", redis_url=redis_server.url, prefix=config.filters.throttle.redis_key_prefix)
    clock = ManualClock()

    async def scenario(step: str) -> str | None:
        async with backend.throttle(clock) as flt:
            decision, _ = await connect(flt, "127.0.0.66", step)
            return decision.reason if decision else None

    assert asyncio.run(scenario("before")) is None
    assert run(config, "add", "127.0.0.66", "--for", "3600") == 0
    assert asyncio.run(scenario("after")) == "throttle.blocked"
