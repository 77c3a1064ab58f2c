"""Metrics, readiness and the ops endpoint, scraped over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from postroom.app.ops_http import OpsServer
from postroom.app.readiness import CheckResult, ReadinessCheck, spool_check, tcp_check
from postroom.core.metrics import Metrics
from postroom.core.spool import DEFERRED, INCOMING, Spool

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout=20))


@asynccontextmanager
async def serving(
    metrics: Metrics, checks: Sequence[ReadinessCheck] = (), check_timeout: float = 3.0
) -> AsyncIterator[tuple[OpsServer, httpx.AsyncClient]]:
    server = OpsServer("127.0.0.1:0", metrics, checks, check_timeout=check_timeout)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=5) as client:
            yield server, client
    finally:
        await server.stop()


async def scrape(client: httpx.AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_scrape_shows_the_counters_of_a_known_traffic_mix(tmp_path: Path) -> None:
    metrics = Metrics()

    async def scenario() -> None:
        async with serving(metrics) as (_, client):
            for _ in range(3):
                metrics.session_opened()
            metrics.session_closed()
            metrics.message_accepted("acme")
            metrics.message_accepted("acme")
            metrics.message_accepted("globex")
            metrics.message_refused("rcpt", "relay_denied")
            metrics.message_refused("data", "virus.found", filter="clamav")
            metrics.filter_checked("rspamd", "data", "pass", 0.030)
            metrics.filter_checked("rspamd", "data", "temperror", 12.0)
            metrics.throttle_hit("ip_rate")
            metrics.webhook_attempt("delivered", 0.02)
            metrics.webhook_attempt("retry", 10.0)
            metrics.webhook_attempt("retry", 0.5)
            metrics.dead_lettered("http_410")
            metrics.outbound_delivery("Example.COM", "delivered")
            s = await scrape(client)

        assert sample(s, "postroom_smtp_sessions_total") == 3
        assert sample(s, "postroom_smtp_sessions_active") == 2
        assert sample(s, "postroom_messages_accepted_total", tenant="acme") == 2
        assert sample(s, "postroom_messages_accepted_total", tenant="globex") == 1
        assert (
            sample(s, "postroom_messages_refused_total", stage="rcpt", reason="relay_denied", filter="none")
            == 1
        )
        assert (
            sample(s, "postroom_messages_refused_total", stage="data", reason="virus.found", filter="clamav")
            == 1
        )
        rspamd = {"filter": "rspamd", "stage": "data"}
        assert sample(s, "postroom_filter_duration_seconds_count", result="pass", **rspamd) == 1
        assert sample(s, "postroom_filter_duration_seconds_bucket", result="pass", le="0.05", **rspamd) == 1
        assert (
            sample(s, "postroom_filter_duration_seconds_bucket", result="temperror", le="10.0", **rspamd) == 0
        )
        assert sample(s, "postroom_throttle_hits_total", kind="ip_rate") == 1
        assert sample(s, "postroom_webhook_attempt_duration_seconds_count", outcome="delivered") == 1
        assert sample(s, "postroom_webhook_attempt_duration_seconds_count", outcome="retry") == 2
        assert sample(s, "postroom_webhook_attempt_duration_seconds_sum", outcome="retry") == 10.5
        assert sample(s, "postroom_dead_letters_total", reason="http_410") == 1
        assert (
            sample(s, "postroom_outbound_deliveries_total", destination="example.com", outcome="delivered")
            == 1
        )
        assert sample(s, "process_open_fds") is not None

    run(scenario)


def test_metrics_objects_do_not_share_series() -> None:
    first, second = Metrics(process_metrics=False), Metrics(process_metrics=False)
    first.message_accepted("acme")
    assert first.registry.get_sample_value("postroom_messages_accepted_total", {"tenant": "acme"}) == 1
    assert second.registry.get_sample_value("postroom_messages_accepted_total", {"tenant": "acme"}) is None


def test_tenant_and_destination_labels_are_bounded() -> None:
    metrics = Metrics(tenant_limit=2, destination_limit=1, process_metrics=False)
    metrics.known_tenants(["vip"])
    for tenant in ("a", "b", "c", "d", "vip", ""):
        metrics.message_accepted(tenant)
    for domain in ("one.example", "two.example", "three.example"):
        metrics.outbound_delivery(domain, "delivered")

    def accepted(tenant: str) -> float | None:
        return metrics.registry.get_sample_value("postroom_messages_accepted_total", {"tenant": tenant})

    # "vip" was registered first and filled one of the two slots; "a" took the other.
    assert (accepted("vip"), accepted("a"), accepted("b"), accepted("none")) == (1, 1, None, 1)
    assert accepted("other") == 3
    delivered = {"outcome": "delivered"}
    get = metrics.registry.get_sample_value
    assert get("postroom_outbound_deliveries_total", {"destination": "one.example", **delivered}) == 1
    assert get("postroom_outbound_deliveries_total", {"destination": "other", **delivered}) == 2


def test_spool_collector_reflects_the_files_in_a_real_spool(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    spool = Spool(tmp_path / "spool", clock=lambda: now[0], fsync=False).create()
    first = spool.store([({"tenant": "acme"}, b"one")])[0]
    now[0] += 30
    second = spool.store([({"tenant": "acme"}, b"two")])[0]
    spool.move(first, INCOMING, DEFERRED)
    now[0] += 90
    metrics = Metrics(process_metrics=False)
    metrics.watch_spool("inbound", spool)

    async def scenario() -> None:
        async with serving(metrics) as (_, client):
            s = await scrape(client)
            spool.move(second, INCOMING, DEFERRED)
            after = await scrape(client)

        assert sample(s, "postroom_spool_messages", queue="inbound", state="incoming") == 1
        assert sample(s, "postroom_spool_messages", queue="inbound", state="deferred") == 1
        assert sample(s, "postroom_spool_messages", queue="inbound", state="dead") == 0
        assert (
            sample(s, "postroom_spool_oldest_message_age_seconds", queue="inbound", state="deferred") == 120
        )
        assert sample(s, "postroom_spool_oldest_message_age_seconds", queue="inbound", state="incoming") == 90
        assert sample(s, "postroom_spool_oldest_message_age_seconds", queue="inbound", state="dead") == 0
        # Read at scrape time: the next scrape sees the move without anyone telling the metrics.
        assert sample(after, "postroom_spool_messages", queue="inbound", state="incoming") == 0
        assert sample(after, "postroom_spool_messages", queue="inbound", state="deferred") == 2

    run(scenario)


def test_readyz_is_200_when_every_check_passes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool").create()

    async def scenario() -> None:
        async with serving(Metrics(process_metrics=False), [spool_check(spool)]) as (_, client):
            response = await client.get("/readyz")
        assert response.status_code == 200
        assert response.json() == {
            "ready": True,
            "failed": [],
            "checks": [{"name": "spool", "ok": True, "detail": "writable"}],
        }
        assert list((spool.root / "tmp").iterdir()) == []  # the probe file is cleaned up

    run(scenario)


def test_readyz_is_503_naming_every_failed_check(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool").create()

    async def rspamd_down() -> CheckResult:
        return "rspamd", False, "connection refused"

    async def hangs() -> CheckResult:
        await asyncio.sleep(30)
        return "never", True, ""

    async def raises() -> CheckResult:
        raise RuntimeError("bug in a check")

    checks = [spool_check(spool), rspamd_down, hangs, raises]

    async def scenario() -> None:
        async with serving(Metrics(process_metrics=False), checks, check_timeout=0.3) as (server, client):
            response = await client.get("/readyz")
            server.set_draining()
            draining = await client.get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["ready"] is False
        assert body["failed"] == ["rspamd", "check[2]", "check[3]"]
        details = {c["name"]: c["detail"] for c in body["checks"]}
        assert details["rspamd"] == "connection refused"
        assert details["check[2]"] == "no answer within 0.3s"
        assert details["check[3]"] == "RuntimeError: bug in a check"
        assert draining.status_code == 503
        assert draining.json()["failed"][-1] == "draining"

    run(scenario)


def test_spool_check_fails_when_spool_is_gone_or_full(tmp_path: Path) -> None:
    gone = Spool(tmp_path / "never-created")
    full = Spool(tmp_path / "full", min_free_bytes=2**62).create()

    async def scenario() -> None:
        assert await spool_check(gone)() == (
            "spool",
            False,
            "not writable: No such file or directory",
        )
        name, ok, detail = await spool_check(full, name="spool-full")()
        assert (name, ok) == ("spool-full", False) and detail.startswith("free space below")

    run(scenario)


def test_tcp_check_reports_reachable_and_unreachable_daemons() -> None:
    async def scenario() -> None:
        async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        with socket.socket() as probe:  # a port nothing listens on: bound, then released
            probe.bind(("127.0.0.1", 0))
            closed_port = probe.getsockname()[1]
        try:
            up = await tcp_check("redis", "127.0.0.1", port)()
            down = await tcp_check("clamd", "127.0.0.1", closed_port, timeout=1)()
        finally:
            server.close()
            await server.wait_closed()
        assert up == ("redis", True, f"127.0.0.1:{port} reachable")
        assert down[:2] == ("clamd", False) and "unreachable" in down[2]

    run(scenario)


def test_healthz_and_http_edge_cases() -> None:
    async def scenario() -> None:
        async with serving(Metrics(process_metrics=False)) as (server, client):
            health = await client.get("/healthz?verbose=1")
            head = await client.head("/healthz")
            missing = await client.get("/nope")
            post = await client.post("/metrics", content=b"x")
            openmetrics = await client.get("/metrics", headers={"Accept": "application/openmetrics-text"})
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"NONSENSE\r\n\r\n")
            garbage = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"x" * 10_000 + b"\r\n\r\n")
            oversized = await asyncio.wait_for(reader.read(), 5)
            writer.close()
        assert (health.status_code, health.text) == (200, "ok\n")
        assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "3")
        assert missing.status_code == 404
        assert post.status_code == 405
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.endswith("# EOF\n")
        assert garbage.startswith(b"HTTP/1.1 400 ")
        assert oversized.startswith(b"HTTP/1.1 400 ")  # request heads are capped at MAX_REQUEST_HEAD

    run(scenario)
