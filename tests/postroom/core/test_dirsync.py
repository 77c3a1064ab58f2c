from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from postroom.core import dirsync
from postroom.core.dirsync import DirectorySync


class SlowRecordingFsync:
    """Stands in for the directory fsync: slow enough for callers to pile up, and records each sync's span."""

    def __init__(self, seconds: float, fail_first: int = 0) -> None:
        self.seconds = seconds
        self.fail_first = fail_first
        self.spans: list[tuple[float, float]] = []
        self.lock = threading.Lock()

    def __call__(self, directory: Path) -> None:
        started = time.monotonic()
        time.sleep(self.seconds)
        with self.lock:
            self.spans.append((started, time.monotonic()))
            if self.fail_first > 0:
                self.fail_first -= 1
                raise OSError(5, "Input/output error")


def _call_many(syncer: DirectorySync, callers: int) -> list[tuple[float, float, BaseException | None]]:
    results: list[tuple[float, float, BaseException | None]] = []
    lock = threading.Lock()
    start = threading.Barrier(callers)

    def call() -> None:
        start.wait()
        called = time.monotonic()
        error: BaseException | None = None
        try:
            syncer.sync()
        except OSError as exc:
            error = exc
        with lock:
            results.append((called, time.monotonic(), error))

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == callers
    return results


def test_concurrent_callers_share_syncs_and_each_is_covered_by_one_that_started_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = SlowRecordingFsync(0.02)
    monkeypatch.setattr(dirsync, "fsync_directory", fake)
    syncer = DirectorySync(tmp_path)

    results = _call_many(syncer, 16)

    assert syncer.fsyncs == len(fake.spans) < 16  # coalesced: at most a leader and one follow-up batch
    for called, returned, error in results:
        assert error is None
        assert any(called <= begun and ended <= returned for begun, ended in fake.spans)


def test_a_failed_sync_is_raised_and_covers_nobody(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = SlowRecordingFsync(0.01, fail_first=1)
    monkeypatch.setattr(dirsync, "fsync_directory", fake)
    syncer = DirectorySync(tmp_path)

    with pytest.raises(OSError):
        syncer.sync()
    syncer.sync()  # the next caller runs a sync of its own, which succeeds
    assert syncer.fsyncs == 2


def test_callers_waiting_on_a_failed_sync_retry_rather_than_return(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = SlowRecordingFsync(0.02, fail_first=1)
    monkeypatch.setattr(dirsync, "fsync_directory", fake)
    syncer = DirectorySync(tmp_path)

    results = _call_many(syncer, 8)

    successful_spans = fake.spans[1:]
    for called, returned, error in results:
        if error is None:  # returned normally: a successful sync began after it and ended before
            assert any(called <= begun and ended <= returned for begun, ended in successful_spans)
    assert sum(1 for *_, error in results if error is not None) == 1  # only the failed sync's leader


def test_a_real_directory_is_synced(tmp_path: Path) -> None:
    syncer = DirectorySync(tmp_path)
    syncer.sync()
    syncer.sync()
    assert syncer.fsyncs == 2
