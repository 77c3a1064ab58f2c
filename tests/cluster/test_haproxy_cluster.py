"""Issue 5's "what must be shown": real HAProxy (TCP, PROXY v2) in front of two `postroom serve` nodes sharing
one redis-server, one real helpdesk (TicketReceiver), clients on several 127.x source addresses.

Each test uses its own source addresses and tenants, so the per-IP rate budget and the counters it reads
belong to it alone; metrics are compared as deltas between two scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from postroom.core.spool import ACTIVE, DEAD, DEFERRED, INCOMING, QUEUE_STATES
from postroom.helpdesk.receiver import Response
from tests.cluster.cluster import ALL_UP, RETRY_CAP, Cluster, Node, Samples, Sent, rcpt, running_cluster
from tests.servers.daemon import wait_until
from tests.servers.redis import RedisServer
from tests.support.harness import SECRET

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

RATE = 4  # [filters.throttle] ip_messages_per_minute on both nodes
UNDELIVERED = (INCOMING, ACTIVE, DEFERRED)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Iterator[Cluster]:
    with running_cluster(tmp_path_factory.mktemp("cluster"), redis_server, RATE) as running:
        yield running


@pytest.fixture(autouse=True)
def healthy(cluster: Cluster) -> Iterator[None]:
    """Each test starts with both nodes in the pool and leaves the helpdesk answering 200 to everyone."""
    assert cluster.wait_for_states(ALL_UP), cluster.server_states()
    yield
    cluster.answers.clear()


def _ids(sent: list[Sent]) -> set[str]:
    return {queue_id for s in sent for queue_id in s.queue_ids}


def _delta(before: list[Samples], after: list[Samples], name: str, **labels: str) -> float:
    """How much a sample grew, summed over the nodes (a sample first seen in `after` counts from 0)."""
    key = (name, frozenset(labels.items()))
    return sum(a.get(key, 0.0) - b.get(key, 0.0) for b, a in zip(before, after, strict=True))


def _spool_sample(state: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return ("postroom_spool_messages", frozenset({"queue": "inbound", "state": state}.items()))


def test_tickets_from_each_node_carry_the_true_client_ip(cluster: Cluster) -> None:
    ips = ("127.0.0.10", "127.0.0.11")
    sent = {ip: [cluster.send(ip, rcpt("origin"), subject=f"from {ip} {n}") for n in range(2)] for ip in ips}
    for ip in ips:
        assert [s.code for s in sent[ip]] == [250, 250], sent[ip]
        assert {s.node for s in sent[ip]} == {"mx1", "mx2"}, "round robin: each address reached both nodes"
    assert cluster.wait_delivered(_ids([s for ip in ips for s in sent[ip]]))
    tickets = {t.idempotency_key: t.payload for t in cluster.receiver.accepted}
    for ip in ips:
        for s in sent[ip]:
            payload = tickets[s.queue_ids[0]]
            assert payload is not None
            assert payload["envelope"]["client_ip"] == ip
            received = [value for name, value in payload["headers"] if name.lower() == "received"]
            assert f"[{ip}]" in received[0] and f"by {s.node}.helpdesk.test" in received[0]


def test_a_per_ip_rate_of_n_a_minute_admits_n_in_total_across_both_nodes(cluster: Cluster) -> None:
    sent = [cluster.send("127.0.0.20", rcpt("ratelimited"), subject=f"rate {n}") for n in range(2 * RATE + 2)]
    accepted = [s for s in sent if s.code == 250]
    refused = [s for s in sent if s.code != 250]
    assert len(accepted) == RATE, [s.reply for s in sent]
    assert {s.node for s in accepted} == {"mx1", "mx2"}
    assert {s.node for s in refused} == {"mx1", "mx2"}, "the budget one node spent is spent on the other"
    for s in refused:
        assert s.reply.startswith("451 4.7.0 message rate limit exceeded"), s.reply
        assert "client 127.0.0.20" in s.reply
    elsewhere = cluster.send("127.0.0.21", rcpt("ratelimited"))
    assert elsewhere.code == 250, "another address has its own budget"
    assert cluster.wait_delivered(_ids([*sent, elsewhere]))


def test_metrics_of_both_nodes_add_up_to_a_known_traffic_mix(cluster: Cluster) -> None:
    before = [node.scrape() for node in cluster.nodes]
    alpha = [cluster.send("127.0.0.30", rcpt("alpha"), subject=f"alpha {n}") for n in range(RATE + 2)]
    beta = [cluster.send("127.0.0.31", rcpt("beta"), subject=f"beta {n}") for n in range(2)]
    relay = cluster.send("127.0.0.31", "victim@example.com")
    assert [s.code for s in alpha] == [250] * RATE + [451, 451]
    assert [s.code for s in beta] == [250, 250] and relay.code == 550
    delivered = _ids(alpha + beta)
    assert cluster.wait_delivered(delivered)

    attempts = "postroom_webhook_attempt_duration_seconds_count"

    def webhook_counted() -> bool:
        after = [node.scrape() for node in cluster.nodes]
        return _delta(before, after, attempts, outcome="delivered") >= len(delivered)

    # The runner counts an attempt when the helpdesk's answer is back, a moment after the helpdesk saw it.
    wait_until(webhook_counted, timeout=10)
    after = [node.scrape() for node in cluster.nodes]
    assert _delta(before, after, attempts, outcome="delivered") == len(delivered)
    accepted = "postroom_messages_accepted_total"
    refused = "postroom_messages_refused_total"
    assert _delta(before, after, accepted, tenant="alpha") == RATE
    assert _delta(before, after, accepted, tenant="beta") == 2
    assert (
        _delta(before, after, refused, stage="mail", filter="throttle", reason="throttle.message_rate") == 2
    )
    assert _delta(before, after, refused, stage="rcpt", reason="routing", filter="routing") == 1
    assert _delta(before, after, "postroom_smtp_sessions_total") == RATE + 2 + 3
    assert all(_delta([b], [a], accepted, tenant="alpha") > 0 for b, a in zip(before, after, strict=True))


def test_one_message_story_is_found_in_the_json_log_by_its_queue_id(cluster: Cluster) -> None:
    sent = cluster.send("127.0.0.40", rcpt("story"), subject="story")
    (queue_id,) = sent.queue_ids
    assert cluster.wait_delivered({queue_id})
    node = cluster.node(sent.node)
    other = next(n for n in cluster.nodes if n is not node)

    def story() -> list[str]:
        return [e["event"] for e in node.log_events() if e.get("queue_id") == queue_id]

    # "delivered" is logged once the helpdesk's 200 is back, just after the receiver counted the ticket.
    assert wait_until(lambda: "delivered" in story(), timeout=10), story()
    events = [e for e in node.log_events() if e.get("queue_id") == queue_id]
    # Passing verdicts are DEBUG lines; the "queued" line lists every verdict of the message.
    assert [e["event"] for e in events] == ["queued", "delivered"]
    queued = events[0]
    assert queued["verdicts"] == "connect/throttle=pass mail/throttle=pass rcpt/throttle=pass"
    assert (queued["tenant"], queued["client_ip"]) == ("story", "127.0.0.40")
    session = [e for e in node.log_events() if e.get("session") == queued["session"]]
    assert (session[0]["event"], session[0]["client_ip"]) == ("connect", "127.0.0.40")
    assert events[1]["attempt"] == 1 and events[1]["status"] == 200
    assert queue_id.encode() not in other.log_path.read_bytes()
    assert SECRET.encode() not in node.log_path.read_bytes()

    output = node.cli("trace", queue_id, "--log", str(node.log_path), "--json")
    traced = [orjson.loads(line) for line in output.splitlines()]
    from_log = [e["event"] for e in traced if e["source"] == str(node.log_path)]
    assert from_log == ["queued", "delivered"]


def test_postroom_queue_json_matches_each_node_spool(cluster: Cluster) -> None:
    tenants = ("bounced", "flaky")
    cluster.answers["bounced"] = Response(400, b'{"error":"no such mailbox"}')
    # Retry-After holds the failed deliveries in deferred/ for RETRY_CAP seconds: a still picture to compare.
    cluster.answers["flaky"] = Response(503, headers={"Retry-After": "3600"})
    sent = {t: [cluster.send("127.0.0.50", rcpt(t), subject=f"{t} {n}") for n in (1, 2)] for t in tenants}
    assert [s.code for t in sent for s in sent[t]] == [250] * 4
    tenant_of = {q: tenant for tenant in sent for q in _ids(sent[tenant])}
    expected: dict[str, dict[str, dict[str, int]]] = {node.name: {} for node in cluster.nodes}
    for tenant, state in (("bounced", DEAD), ("flaky", DEFERRED)):
        for s in sent[tenant]:
            states = expected[s.node].setdefault(tenant, {})
            states[state] = states.get(state, 0) + 1

    def listed(node: Node) -> dict[str, dict[str, int]]:
        """Tenant → state → count from listing the node's spool; "?" for a message this test did not send."""
        rows: dict[str, dict[str, int]] = {}
        for state in QUEUE_STATES:
            for queue_id in node.spool.ids(state):
                states = rows.setdefault(tenant_of.get(queue_id, "?"), {})
                states[state] = states.get(state, 0) + 1
        return rows

    assert wait_until(
        lambda: all(listed(n) == expected[n.name] for n in cluster.nodes), timeout=RETRY_CAP / 2
    )
    for node in cluster.nodes:
        shape = orjson.loads(node.cli("queue", "--json"))["inbound"]
        tenant_rows = {row["tenant"]: row["states"] for row in shape["rows"] if row["tenant"] != "TOTAL"}
        assert tenant_rows == listed(node) == expected[node.name]
        counts = {state: info["count"] for state, info in shape["states"].items()}
        assert counts == {state: len(node.spool.ids(state)) for state in QUEUE_STATES}
        samples = node.scrape()  # /metrics reads the same spool
        assert {state: samples[_spool_sample(state)] for state in QUEUE_STATES} == counts


def test_killing_a_node_loses_no_acknowledged_message_and_the_other_keeps_serving(cluster: Cluster) -> None:
    cluster.answers["outage"] = Response(503)  # the helpdesk is down: both spools hold the mail
    before = [cluster.send(f"127.0.1.{n}", rcpt("outage"), subject=f"before {n}") for n in range(1, 9)]
    assert [s.code for s in before] == [250] * 8
    mx1 = cluster.node("mx1")
    on_mx1 = _ids([s for s in before if s.node == "mx1"])
    assert len(on_mx1) == 4
    assert on_mx1 <= {q for state in UNDELIVERED for q in mx1.spool.ids(state)}

    mx1.process.kill9()
    after = [cluster.send(f"127.0.1.{n}", rcpt("outage"), subject=f"after {n}") for n in range(9, 17)]
    assert [(s.code, s.node) for s in after] == [(250, "mx2")] * 8, [s.reply for s in after]
    assert cluster.wait_for_states({"mx1": "DOWN", "mx2": "UP"})
    assert on_mx1 <= {q for state in UNDELIVERED for q in mx1.spool.ids(state)}, "on disk across kill -9"

    cluster.answers.clear()
    mx1.process.start()  # recovery returns active/ to the queue; the runner delivers what mx1 acknowledged
    acknowledged = _ids(before + after)
    assert cluster.wait_delivered(acknowledged, timeout=60), acknowledged - cluster.delivered_keys()

    def mx1_drained() -> bool:  # the last deliveries leave active/ once their 200 is back
        return not {q for state in UNDELIVERED for q in mx1.spool.ids(state)} & acknowledged

    assert wait_until(mx1_drained, timeout=10)
    assert cluster.wait_for_states(ALL_UP), "HAProxy takes the restarted node back"
