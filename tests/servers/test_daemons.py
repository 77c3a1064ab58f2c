"""The test daemons themselves: they answer, use only loopback and the test DNS, and survive kill + start."""

from __future__ import annotations

import pytest

from tests.servers.clamd import ClamdServer
from tests.servers.daemon import ManagedServer, find_binary
from tests.servers.dns import DnsServer
from tests.servers.redis import RedisServer
from tests.servers.rspamd import RspamdServer

pytestmark = pytest.mark.integration


def test_missing_binary_fails_naming_the_install_script() -> None:
    with pytest.raises(pytest.fail.Exception, match=r"tests/install-system-deps\.sh"):
        find_binary("postroom-no-such-daemon")


def test_rspamd_listens_on_loopback_and_asks_only_the_test_dns(
    rspamd_server: RspamdServer, dns_server: DnsServer
) -> None:
    assert rspamd_server.ping()
    assert rspamd_server.url.startswith("http://127.0.0.1:")
    assert rspamd_server.nameserver == dns_server.nameserver


def test_clamd_answers_on_tcp_and_unix_socket(clamd_server: ClamdServer) -> None:
    assert clamd_server.ping()
    assert clamd_server.tcp_address.startswith("127.0.0.1:")
    assert clamd_server.unix_address.startswith("unix:/")


def test_redis_answers(redis_server: RedisServer) -> None:
    assert redis_server.ping()
    redis_server.flush()


@pytest.mark.parametrize("fixture", ["rspamd_killable", "clamd_killable", "redis_killable"])
def test_killed_daemon_stops_answering_and_comes_back_on_the_same_port(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    server: ManagedServer = request.getfixturevalue(fixture)
    port = server.port
    server.kill()
    assert not server.process.is_running()
    assert not server.ping()
    server.start()
    assert server.port == port
    assert server.ping()
