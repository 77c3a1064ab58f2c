"""How `postroom serve` wires its parts: dependency readiness, metrics fed by the listener and runner."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from postroom.app.readiness import dependency_checks
from postroom.helpdesk.receiver import TicketReceiver
from tests.support.harness import DOMAIN, free_port, make_config, running, send, smtp_port


def test_readiness_checks_follow_the_enabled_dependencies(tmp_path: Path) -> None:
    config = make_config(
        tmp_path / "spool",
        "https://127.0.0.3/api/tickets",
        filters={"rspamd": {"enabled": True, "url": "http://127.0.0.1:11333"}, "clamav": {"enabled": False}},
        redis={"url": "redis://127.0.0.1:6390/0"},
    )
    results = [asyncio.run(check()) for check in dependency_checks(config)]
    assert [name for name, _, _ in results] == ["rspamd", "redis", "webhook"]
    assert "127.0.0.1:6390" in results[1][2] and "127.0.0.3:443" in results[2][2]


async def test_readyz_names_a_helpdesk_that_is_down_and_metrics_count_traffic(
    tmp_path: Path, helpdesk: TicketReceiver
) -> None:
    metrics_port = free_port()
    config = make_config(tmp_path / "spool", helpdesk.url, metrics={"listen": f"127.0.0.1:{metrics_port}"})
    async with running(config), httpx.AsyncClient(base_url=f"http://127.0.0.1:{metrics_port}") as client:
        assert (await client.get("/readyz")).status_code == 200
        ok = await asyncio.to_thread(send, smtp_port(config), [f"support@acme.{DOMAIN}"])
        refused = await asyncio.to_thread(send, smtp_port(config), ["victim@example.net"])
        assert (ok.code, refused.code) == (250, 550)
        assert await helpdesk.wait_for_async(1, timeout=20)
        await helpdesk.stop()
        down = await client.get("/readyz")
        text = (await client.get("/metrics")).text
    assert down.status_code == 503 and "webhook" in down.text
    assert 'postroom_messages_accepted_total{tenant="acme"} 1.0' in text
    assert 'postroom_messages_refused_total{filter="routing",reason="routing",stage="rcpt"} 1.0' in text
    assert 'postroom_webhook_attempt_duration_seconds_count{outcome="delivered"} 1.0' in text
