from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from postroom.core.spool import (
    ACTIVE,
    CORRUPT,
    DEFERRED,
    INCOMING,
    Claim,
    DeliveryState,
    NotDue,
    Spool,
    SpoolError,
    SpoolFull,
    decode_message,
    encode_message,
    new_queue_id,
    queued_at_from_id,
)


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool").create()


def test_encode_decode_roundtrip_keeps_raw_bytes_exactly() -> None:
    raw = b"Subject: x\r\n\r\n\x00\xff body with \n bare newlines\r\n"
    meta, back = decode_message(encode_message({"tenant": "acme", "rcpt": ["a@b"]}, raw))
    assert meta == {"tenant": "acme", "rcpt": ["a@b"]}
    assert back == raw


def test_store_puts_every_item_in_incoming_with_id_and_time(spool: Spool) -> None:
    ids = spool.store([({"tenant": "a"}, b"one"), ({"tenant": "b"}, b"two")])
    assert len(set(ids)) == 2
    assert spool.ids(INCOMING) == sorted(ids)
    first = spool.read(INCOMING, ids[0])
    assert first.raw == b"one" and first.meta["tenant"] == "a" and first.meta["id"] == ids[0]
    assert spool.read_meta(INCOMING, ids[1])["tenant"] == "b"
    assert os.listdir(spool.root / "tmp") == []


def test_queue_ids_are_time_ordered_and_decode_their_time() -> None:
    earlier = new_queue_id(lambda: 1_700_000_000.0)
    later = new_queue_id(lambda: 1_700_000_000.5)
    assert earlier < later
    assert queued_at_from_id(later) == pytest.approx(1_700_000_000.5)


def test_store_refuses_when_free_space_below_floor(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", min_free_bytes=2**62).create()
    with pytest.raises(SpoolFull):
        spool.store([({}, b"x")])
    assert spool.ids(INCOMING) == []


def test_move_is_false_when_another_worker_took_the_message(spool: Spool) -> None:
    (queue_id,) = spool.store([({}, b"x")])
    assert spool.move(queue_id, INCOMING, ACTIVE)
    assert not spool.move(queue_id, INCOMING, ACTIVE)
    assert spool.locate(queue_id) == ACTIVE


def test_delivery_state_survives_and_is_replaced_atomically(spool: Spool) -> None:
    (queue_id,) = spool.store([({}, b"x")])
    state = spool.load_state(queue_id)
    assert state.attempts == 0
    state.attempts = 2
    state.add_history({"event": "retry"})
    spool.save_state(queue_id, state)
    assert spool.load_state(queue_id).attempts == 2
    assert [p.name for p in (spool.root / "state").iterdir()] == [f"{queue_id}.json"]


def test_history_is_bounded() -> None:
    state = DeliveryState()
    for i in range(200):
        state.add_history({"n": i})
    assert len(state.history) == DeliveryState.MAX_HISTORY
    assert state.history[-1] == {"n": 199}


def test_recover_requeues_interrupted_and_counts_the_attempt(spool: Spool) -> None:
    (queue_id,) = spool.store([({}, b"x")])
    spool.move(queue_id, INCOMING, ACTIVE)
    (spool.root / "tmp" / "half-written.msg").write_bytes(b"partial")
    report = spool.recover()
    assert report.requeued == [queue_id] and report.tmp_removed == 1
    assert spool.locate(queue_id) == INCOMING
    state = spool.load_state(queue_id)
    assert state.attempts == 1 and state.crashes == 1


def test_message_that_keeps_crashing_goes_to_corrupt_never_loops(spool: Spool) -> None:
    (queue_id,) = spool.store([({}, b"x")])
    for _ in range(3):
        source = spool.locate(queue_id)
        assert source is not None
        spool.move(queue_id, source, ACTIVE)
        spool.recover()
    assert spool.locate(queue_id) == CORRUPT
    assert spool.load_state(queue_id).crashes == 3


def test_orphan_state_files_are_removed(spool: Spool) -> None:
    spool.save_state("0000000000000DEADBE", DeliveryState(attempts=1))
    assert spool.recover().orphan_states_removed == 1


def test_read_missing_message_is_a_spool_error(spool: Spool) -> None:
    with pytest.raises(SpoolError):
        spool.read(DEFERRED, "nope")


def test_counts_report_oldest_age(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    spool = Spool(tmp_path / "s", clock=lambda: now[0]).create()
    spool.store([({}, b"x")])
    now[0] += 30
    count, oldest = spool.counts()[INCOMING]
    assert count == 1 and oldest == pytest.approx(30, abs=0.01)


# ---- claims: a locked file is an attempt in flight, in this process or a sibling worker -------------------


def test_claim_takes_the_message_into_active_with_its_content(spool: Spool) -> None:
    (queue_id,) = spool.store([({"tenant": "acme"}, b"raw bytes")])
    claim = spool.claim(queue_id, now=0.0)
    assert isinstance(claim, Claim)
    assert (claim.meta["tenant"], claim.raw, claim.state.attempts) == ("acme", b"raw bytes", 0)
    assert spool.locate(queue_id) == ACTIVE
    assert spool.claim(queue_id, now=0.0) is None  # nothing left to take
    claim.release()
    claim.release()  # idempotent


def test_recover_abandoned_leaves_a_live_attempt_alone(spool: Spool) -> None:
    (queue_id,) = spool.store([({}, b"x")])
    claim = spool.claim(queue_id, now=0.0)
    assert isinstance(claim, Claim)
    assert spool.recover_abandoned().requeued == []
    assert spool.recover().requeued == []  # even the full recovery: the lock says it is alive
    assert spool.locate(queue_id) == ACTIVE
    claim.release()  # the attempt ends without moving the file: abandoned
    assert spool.recover_abandoned().requeued == [queue_id]
    assert spool.locate(queue_id) == INCOMING
    assert spool.load_state(queue_id).crashes == 1


def test_a_claim_held_by_another_process_is_skipped(spool: Spool) -> None:
    (queue_id,) = spool.store([({}, b"x")])
    spool.move(queue_id, INCOMING, DEFERRED)
    holder = _hold_lock(spool.path(DEFERRED, queue_id))
    try:
        assert spool.claim(queue_id, now=0.0) is None  # another worker is claiming it right now
        assert spool.locate(queue_id) == DEFERRED
    finally:
        holder.kill()
        holder.wait()


def test_attempt_of_a_killed_worker_is_recovered_by_a_sibling(spool: Spool) -> None:
    (queue_id,) = spool.store([({}, b"x")])
    spool.move(queue_id, INCOMING, ACTIVE)
    holder = _hold_lock(spool.path(ACTIVE, queue_id))
    assert spool.recover_abandoned().requeued == []
    holder.kill()  # SIGKILL: the kernel releases the lock, nothing else runs
    holder.wait()
    assert spool.recover_abandoned().requeued == [queue_id]
    assert spool.locate(queue_id) == INCOMING


def test_deferred_message_is_not_claimed_before_its_time(spool: Spool) -> None:
    (queue_id,) = spool.store([({}, b"x")])
    spool.save_state(queue_id, DeliveryState(attempts=1, next_attempt_at=100.0))
    spool.move(queue_id, INCOMING, DEFERRED)
    assert spool.claim(queue_id, now=99.0) == NotDue(100.0)
    assert spool.locate(queue_id) == DEFERRED
    claim = spool.claim(queue_id, now=100.0)
    assert isinstance(claim, Claim) and claim.state.attempts == 1
    claim.release()


def _hold_lock(path: str) -> subprocess.Popen[bytes]:
    """A separate process holding an exclusive flock on `path` until killed (a sibling worker)."""
    code = (
        "import fcntl, os, sys, time\n"
        f"fd = os.open({str(path)!r}, os.O_RDONLY)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "sys.stdout.write('locked\\n'); sys.stdout.flush()\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    return holder


def test_stale_tmp_files_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    """A store killed between its write and its rename leaves a tmp/ file; siblings sweep it, later."""
    spool = Spool(tmp_path).create()
    orphan = tmp_path / "tmp" / "0123abc.msg"
    orphan.write_bytes(b"half a message")
    an_hour_ago = orphan.stat().st_mtime - 3600
    os.utime(orphan, (an_hour_ago, an_hour_ago))
    live = tmp_path / "tmp" / "0456def.msg"
    live.write_bytes(b"being written now")
    assert spool.remove_stale_tmp(older_than=600) == 1
    assert not orphan.exists() and live.exists()
    assert spool.remove_stale_tmp(older_than=600) == 0
    (queue_id,) = spool.store([({"tenant": "acme"}, b"Subject: after the sweep\r\n\r\nhi\r\n")])
    assert spool.ids(INCOMING) == [queue_id]
