from __future__ import annotations

import json
from pathlib import Path

from outbound.queueview import BUCKET_LABELS, age_bucket, outbound_queue_shape, render_text, shape_as_json
from postroom.core.spool import ACTIVE, DEAD, DEFERRED, INCOMING, Spool

NOW = 1_700_000_000.0


def queue(spool: Spool, domain: str, minutes_old: float, state: str = INCOMING) -> str:
    meta = {
        "kind": "outbound",
        "domain": domain,
        "rcpt_to": [f"a@{domain}"],
        "queued_at": NOW - minutes_old * 60,
    }
    (queue_id,) = spool.store([(meta, b"Subject: x\r\n\r\nx\r\n")])
    if state != INCOMING:
        assert spool.move(queue_id, INCOMING, state)
    return queue_id


def test_age_buckets_double_like_qshape() -> None:
    minutes = [0, 4.9, 5, 9.9, 10, 25, 45, 100, 159.9, 160, 10_000]
    assert [age_bucket(m * 60) for m in minutes] == [0, 0, 1, 1, 2, 3, 4, 5, 5, 6, 6]
    assert len(BUCKET_LABELS) == 7


def test_rows_by_domain_with_age_columns_and_state_counts(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "out").create()
    for minutes in (1, 2, 7, 200):
        queue(spool, "gmail.com", minutes, DEFERRED)
    queue(spool, "gmail.com", 3, ACTIVE)
    queue(spool, "example.org", 30)
    queue(spool, "example.org", 0.5, DEAD)  # not live: left out by default
    rows = outbound_queue_shape(spool, NOW)
    assert [row.name for row in rows] == ["TOTAL", "gmail.com", "example.org"]
    total, gmail, example = rows
    assert (gmail.total, gmail.buckets) == (5, [3, 1, 0, 0, 0, 0, 1])
    assert gmail.states == {ACTIVE: 1, DEFERRED: 4}
    assert (example.total, example.buckets, example.states) == (1, [0, 0, 0, 1, 0, 0, 0], {INCOMING: 1})
    assert total.total == 6 and total.buckets == [3, 1, 0, 1, 0, 0, 1]
    with_dead = outbound_queue_shape(spool, NOW, states=(DEAD,))
    assert [(row.name, row.total) for row in with_dead] == [("TOTAL", 1), ("example.org", 1)]


def test_text_and_json_forms(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "out").create()
    queue(spool, "gmail.com", 12, DEFERRED)
    rows = outbound_queue_shape(spool, NOW)
    text = render_text(rows).splitlines()
    assert text[0].split() == ["DOMAIN", "T", *BUCKET_LABELS, DEFERRED]
    assert text[1].split() == ["TOTAL", "1", "0", "0", "1", "0", "0", "0", "0", "1"]
    assert text[2].split()[0] == "gmail.com"
    data = json.loads(json.dumps(shape_as_json(rows)))
    assert data["buckets"] == list(BUCKET_LABELS)
    assert data["rows"][1] == {
        "domain": "gmail.com",
        "total": 1,
        "buckets": [0, 0, 1, 0, 0, 0, 0],
        "states": {DEFERRED: 1},
    }


def test_empty_queue_has_only_the_total_row(tmp_path: Path) -> None:
    rows = outbound_queue_shape(Spool(tmp_path / "out").create(), NOW)
    assert [(row.name, row.total) for row in rows] == [("TOTAL", 0)]
