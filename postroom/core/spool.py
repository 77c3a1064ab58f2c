"""The durable queue: one file per message, states are directories, every state change is a rename.

Layout under the spool root::

    tmp/       being written; never acknowledged; emptied at start-up
    incoming/  acknowledged with 250, waiting for its first delivery attempt
    active/    an attempt is in progress (the rename into active/ is the durable record of that attempt)
    deferred/  waiting for a retry; when is in state/<id>.json
    dead/      given up (4xx from the helpdesk, schedule exhausted); operators replay from here
    corrupt/   crashed the runner too often; kept for a human
    done/      delivered, kept only when `keep_delivered` is set
    state/     <id>.json: attempts, next attempt, last error, history — never moves, so a rename is atomic

A message file is ``POSTROOM1 <meta length>\\n`` + the envelope/meta JSON + ``\\n`` + the raw message, written
to tmp/, fsynced, renamed into incoming/ and the directory fsynced before the listener answers 250.
All methods block on disk: async callers run them in a thread.

A delivery attempt holds an exclusive flock(2) on its message file from the claim until the file leaves
active/ (see `claim`). The kernel drops the lock when the process dies, however it dies, so recovery can tell
an attempt in flight in another process (a sibling worker) from one abandoned by a crash, and several
workers can share one spool without stealing each other's work.

Reads open with O_NOFOLLOW and take regular files only (postroom/core/regular_files.py): a symlink or FIFO
planted in a state directory is neither shown, nor delivered, nor replayed.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from postroom.core.dirsync import DirectorySync, fsync_directory
from postroom.core.regular_files import NotRegularFile, is_regular, open_regular, read_regular

if TYPE_CHECKING:
    from postroom.core.config import SpoolConfig

log = logging.getLogger("postroom.spool")

TMP, INCOMING, ACTIVE, DEFERRED, DEAD, CORRUPT, DONE = (
    "tmp",
    "incoming",
    "active",
    "deferred",
    "dead",
    "corrupt",
    "done",
)
QUEUE_STATES = (INCOMING, ACTIVE, DEFERRED, DEAD, CORRUPT, DONE)
# A tmp/ file this old was left by an interrupted store: a live one is renamed within moments of its write.
STALE_TMP_SECONDS = 600.0
_MAGIC = b"POSTROOM1 "
_SUFFIX = ".msg"


class SpoolError(Exception):
    """The spool cannot store or read a message (disk full, unreadable file, ...)."""


class SpoolFull(SpoolError):
    """Free space is below the configured floor: refuse new mail rather than accept what can't be kept."""


@dataclass
class SpooledMessage:
    id: str
    state: str
    meta: dict[str, Any]
    raw: bytes


@dataclass
class DeliveryState:
    """Mutable delivery bookkeeping, kept beside (not inside) the immutable message file."""

    attempts: int = 0
    crashes: int = 0
    first_attempt_at: float | None = None
    next_attempt_at: float | None = None
    last_error: str = ""
    last_status: int | None = None
    last_excerpt: str = ""
    dead_reason: str = ""
    dead_at: float | None = None
    replays: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    MAX_HISTORY = 50

    def add_history(self, event: dict[str, Any]) -> None:
        self.history.append(event)
        del self.history[: -self.MAX_HISTORY]

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeliveryState:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class Claim:
    """A message this process is delivering; its file stays locked until `release()`."""

    queue_id: str
    meta: dict[str, Any]
    raw: bytes
    state: DeliveryState
    fd: int

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True)
class NotDue:
    """The message is deferred until `at` (another worker retried it meanwhile and moved its time)."""

    at: float


@dataclass
class RecoveryReport:
    requeued: list[str] = field(default_factory=list)
    corrupted: list[str] = field(default_factory=list)
    tmp_removed: int = 0
    orphan_states_removed: int = 0


def new_queue_id(clock: Callable[[], float] = time.time) -> str:
    """Time-ordered, unique, file-name safe: 13 hex digits of microseconds + 6 random hex digits."""
    return f"{int(clock() * 1_000_000):013X}{secrets.token_hex(3).upper()}"


def encode_message(meta: dict[str, Any], raw: bytes) -> bytes:
    body = orjson.dumps(meta)
    return b"".join((_MAGIC, str(len(body)).encode(), b"\n", body, b"\n", raw))


def decode_message(data: bytes) -> tuple[dict[str, Any], bytes]:
    if not data.startswith(_MAGIC):
        raise SpoolError("not a Postroom spool file")
    newline = data.index(b"\n")
    length = int(data[len(_MAGIC) : newline])
    start = newline + 1
    meta = orjson.loads(data[start : start + length])
    return meta, data[start + length + 1 :]


class Spool:
    def __init__(
        self,
        root: str | Path,
        *,
        min_free_bytes: int = 0,
        corrupt_after_crashes: int = 3,
        keep_delivered: bool = False,
        clock: Callable[[], float] = time.time,
        fsync: bool = True,
    ) -> None:
        self.root = Path(root)
        self._root = str(self.root)
        self.min_free_bytes = min_free_bytes
        self.corrupt_after_crashes = corrupt_after_crashes
        self.keep_delivered = keep_delivered
        self.clock = clock
        self._fsync = fsync
        self._state_lock = threading.Lock()
        # One coalescing syncer per directory, so concurrent stores share a directory fsync.
        self._dir_syncs = {name: DirectorySync(self.root / name) for name in (*QUEUE_STATES, "state")}

    # ---- layout -------------------------------------------------------------------------------------------

    def create(self) -> Spool:
        for name in (TMP, *QUEUE_STATES, "state"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        return self

    # Paths are plain strings joined onto the root's: several per message, and pathlib's parsing of each
    # showed in the listener's profile (docs/benchmark.md).
    def path(self, state: str, queue_id: str) -> str:
        return f"{self._root}/{state}/{queue_id}{_SUFFIX}"

    def _state_path(self, queue_id: str) -> str:
        return f"{self._root}/state/{queue_id}.json"

    # ---- writing new mail ---------------------------------------------------------------------------------

    def has_room(self, incoming_bytes: int = 0) -> bool:
        usage = shutil.disk_usage(self.root)
        return usage.free - incoming_bytes >= self.min_free_bytes

    def store(self, items: Sequence[tuple[dict[str, Any], bytes]]) -> list[str]:
        """Durably queue messages; returns their ids. Only after this returns may the listener say 250.

        Each item's meta gets `id` and `queued_at`. Either all items are in incoming/ on return, or an
        exception is raised (the caller answers 4xx; any already-renamed item is a harmless duplicate).
        """
        total = sum(len(raw) for _, raw in items)
        if not self.has_room(total):
            raise SpoolFull(f"free space below {self.min_free_bytes} bytes")
        written: list[tuple[str, str]] = []
        try:
            for meta, raw in items:
                queue_id = meta.get("id") or new_queue_id(self.clock)
                meta = {**meta, "id": queue_id, "queued_at": meta.get("queued_at", self.clock())}
                tmp_path = self.path(TMP, queue_id)
                self._write_file(tmp_path, encode_message(meta, raw))
                written.append((queue_id, tmp_path))
            for queue_id, tmp_path in written:
                os.rename(tmp_path, self.path(INCOMING, queue_id))
            self._sync_dir(self.root / INCOMING)
        except OSError as exc:
            for _, tmp_path in written:
                with contextlib.suppress(OSError):
                    os.unlink(tmp_path)
            raise SpoolError(f"cannot write to spool: {exc.strerror or exc}") from exc
        return [queue_id for queue_id, _ in written]

    def _write_file(self, path: str, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            if self._fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _sync_dir(self, directory: Path) -> None:
        if not self._fsync:
            return
        syncer = self._dir_syncs.get(directory.name)
        if syncer is not None and syncer.directory == directory:
            syncer.sync()
        else:
            fsync_directory(directory)

    # ---- reading ------------------------------------------------------------------------------------------

    def read(self, state: str, queue_id: str) -> SpooledMessage:
        try:
            data = read_regular(self.path(state, queue_id))
        except FileNotFoundError:
            raise SpoolError(f"no message {queue_id} in {state}/") from None
        except NotRegularFile:
            raise SpoolError(f"{state}/{queue_id}: not a regular spool file, refused") from None
        meta, raw = decode_message(data)
        return SpooledMessage(queue_id, state, meta, raw)

    def read_meta(self, state: str, queue_id: str) -> dict[str, Any]:
        """The envelope/meta without reading the (possibly large) message body."""
        try:
            fd = open_regular(self.path(state, queue_id))
        except NotRegularFile:
            raise SpoolError(f"{state}/{queue_id}: not a regular spool file, refused") from None
        with os.fdopen(fd, "rb") as fh:
            header = fh.readline(64)
            if not header.startswith(_MAGIC):
                raise SpoolError(f"{queue_id}: not a Postroom spool file")
            meta: dict[str, Any] = orjson.loads(fh.read(int(header[len(_MAGIC) :])))
            return meta

    def ids(self, state: str) -> list[str]:
        """Queue ids in a state, oldest first (ids are time-ordered)."""
        try:
            names = os.listdir(self.root / state)
        except FileNotFoundError:
            return []
        return sorted(n[: -len(_SUFFIX)] for n in names if n.endswith(_SUFFIX))

    def locate(self, queue_id: str) -> str | None:
        for state in QUEUE_STATES:
            if is_regular(self.path(state, queue_id)):  # a planted symlink is no message
                return state
        return None

    # ---- state changes ------------------------------------------------------------------------------------

    def move(self, queue_id: str, src: str, dst: str, *, sync: bool = True) -> bool:
        """Rename between states; False when the message was not in `src` (another worker took it)."""
        try:
            os.rename(self.path(src, queue_id), self.path(dst, queue_id))
        except FileNotFoundError:
            return False
        if sync:
            self._sync_dir(self.root / dst)
        return True

    def claim(self, queue_id: str, *, now: float) -> Claim | NotDue | None:
        """Take a message from incoming/ or (when due) deferred/ into active/ for one attempt.

        None when it is gone, another process is claiming it right now, or the file is unreadable (then it
        is moved to corrupt/). The lock is taken on the file
        before the rename (a lock follows the inode) so there is no instant at which the message is in
        active/ unlocked while its attempt is alive.
        """
        for source in (INCOMING, DEFERRED):
            fd = self._lock(self.path(source, queue_id))
            if fd is None:
                continue
            try:
                state = self.load_state(queue_id)
                due = state.next_attempt_at
                if source == DEFERRED and due is not None and due > now:
                    os.close(fd)
                    return NotDue(due)
                # Not synced: it records an attempt, it does not keep a message. After a power loss the file
                # is back in incoming/ or still in active/ (recovered to incoming/): delivered either way.
                if not self.move(queue_id, source, ACTIVE, sync=False):
                    os.close(fd)  # the CLI moved it meanwhile
                    continue
                try:
                    meta, raw = decode_message(_read_fd(fd))
                except (SpoolError, ValueError) as exc:
                    # No attempt can read it: keep it for a human, never a crash loop.
                    self.move(queue_id, ACTIVE, CORRUPT)
                    log.error(
                        "unreadable spool file moved to corrupt/",
                        extra={"queue_id": queue_id, "error": str(exc)},
                    )
                    os.close(fd)
                    return None
            except BaseException:
                os.close(fd)
                raise
            return Claim(queue_id, meta, raw, state, fd)
        return None

    def _lock(self, path: str) -> int | None:
        """An open, exclusively locked descriptor of `path`; None if it is missing or locked elsewhere."""
        try:
            fd = open_regular(path)
        except (FileNotFoundError, NotRegularFile):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Renamed or finished between our open and our lock: what we locked is no longer at `path`.
            if os.stat(path).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError(path)
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return None
        return fd

    def finish(self, queue_id: str) -> None:
        """Delivered: keep in done/ or remove, with its state file."""
        if self.keep_delivered:
            self.move(queue_id, ACTIVE, DONE)
            return
        # The unlink is not synced (Postfix doesn't either): a power loss can only bring a delivered message
        # back, to be POSTed again with the same Idempotency-Key — never lose one.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(ACTIVE, queue_id))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._state_path(queue_id))

    def remove(self, state: str, queue_id: str) -> bool:
        try:
            os.unlink(self.path(state, queue_id))
        except FileNotFoundError:
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._state_path(queue_id))
        return True

    def load_state(self, queue_id: str) -> DeliveryState:
        try:
            data = read_regular(self._state_path(queue_id))
        except FileNotFoundError:
            return DeliveryState()
        except NotRegularFile:
            log.warning("state file is not a regular file, ignored", extra={"queue_id": queue_id})
            return DeliveryState()
        try:
            return DeliveryState.from_dict(orjson.loads(data))
        except (orjson.JSONDecodeError, TypeError):
            log.warning("unreadable delivery state, starting afresh", extra={"queue_id": queue_id})
            return DeliveryState()

    def save_state(self, queue_id: str, state: DeliveryState) -> None:
        """Atomically replace the delivery state (write tmp, fsync, rename, fsync dir)."""
        path = self._state_path(queue_id)
        tmp = f"{self._root}/state/.{queue_id}.{threading.get_ident()}.tmp"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        self._write_file(tmp, orjson.dumps(state.as_dict()))
        os.replace(tmp, path)
        self._sync_dir(self.root / "state")

    # ---- start-up -----------------------------------------------------------------------------------------

    def recover(self) -> RecoveryReport:
        """Start-up, while no other process uses the spool: clear tmp/, return interrupted work to the queue
        (a message that keeps crashing the runner goes to corrupt/), drop state files of vanished messages."""
        report = RecoveryReport()
        for name in os.listdir(self.root / TMP):
            with contextlib.suppress(OSError):
                (self.root / TMP / name).unlink()
                report.tmp_removed += 1
        self._requeue_abandoned(report)
        report.orphan_states_removed = self._remove_orphan_states()
        return report

    def remove_stale_tmp(self, older_than: float = STALE_TMP_SECONDS) -> int:
        """Remove tmp/ files that no write has touched for `older_than` seconds; returns how many.

        They are what a process killed mid-store leaves (a sibling worker's, while the others keep serving):
        a live store renames its file out of tmp/ within moments of writing it. Safe beside running
        workers: a store whose file was taken after all fails its rename and answers 451, so nothing that
        got a 250 is ever touched.
        """
        cutoff = self.clock() - older_than
        removed = 0
        tmp_dir = f"{self._root}/{TMP}"
        for name in os.listdir(tmp_dir):
            path = f"{tmp_dir}/{name}"
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_mtime < cutoff:
                    os.unlink(path)
                    removed += 1
        if removed:
            log.warning(
                "removed files an interrupted store left in tmp/",
                extra={"event": "stale_tmp_removed", "spool": self._root, "removed": removed},
            )
        return removed

    def recover_abandoned(self) -> RecoveryReport:
        """Safe while sibling workers run: requeue only attempts whose process died (their lock is gone).

        tmp/ is left to `remove_stale_tmp` and orphan state files to the next full `recover()`: another
        worker may be writing.
        """
        report = RecoveryReport()
        self._requeue_abandoned(report)
        return report

    def _requeue_abandoned(self, report: RecoveryReport) -> None:
        for queue_id in self.ids(ACTIVE):
            fd = self._lock(self.path(ACTIVE, queue_id))
            if fd is None:
                continue  # finished meanwhile, or an attempt alive in another process
            try:
                self._requeue_interrupted(queue_id, report)
            finally:
                os.close(fd)
        if report.requeued or report.corrupted:
            log.warning(
                "recovered interrupted deliveries",
                extra={
                    "event": "recovery",
                    "spool": str(self.root),
                    "requeued": len(report.requeued),
                    "corrupted": len(report.corrupted),
                },
            )

    def _requeue_interrupted(self, queue_id: str, report: RecoveryReport) -> None:
        state = self.load_state(queue_id)
        state.crashes += 1
        state.attempts += 1  # the interrupted attempt counts: a crash never resets the count
        state.add_history({"at": self.clock(), "event": "interrupted"})
        self.save_state(queue_id, state)
        if state.crashes >= self.corrupt_after_crashes:
            self.move(queue_id, ACTIVE, CORRUPT)
            report.corrupted.append(queue_id)
            log.error(
                "message interrupted its delivery too often, moved to corrupt/",
                extra={"queue_id": queue_id, "crashes": state.crashes},
            )
        else:
            self.move(queue_id, ACTIVE, INCOMING)
            report.requeued.append(queue_id)

    def _remove_orphan_states(self) -> int:
        removed = 0
        present = {qid for state in QUEUE_STATES for qid in self.ids(state)}
        for name in os.listdir(self.root / "state"):
            queue_id = name.removesuffix(".json")
            if name.endswith(".json") and queue_id not in present:
                with contextlib.suppress(OSError):
                    (self.root / "state" / name).unlink()
                    removed += 1
        return removed

    # ---- views --------------------------------------------------------------------------------------------

    def counts(self) -> dict[str, tuple[int, float | None]]:
        """Per state: (number of messages, age in seconds of the oldest)."""
        now = self.clock()
        summary: dict[str, tuple[int, float | None]] = {}
        for state in QUEUE_STATES:
            ids = self.ids(state)
            oldest = (now - queued_at_from_id(ids[0])) if ids else None
            summary[state] = (len(ids), oldest)
        return summary


def open_spool(section: SpoolConfig) -> Spool:
    """The spool `[spool]` describes, its directories created."""
    return Spool(
        section.path,
        min_free_bytes=section.min_free_bytes,
        corrupt_after_crashes=section.corrupt_after_crashes,
        keep_delivered=section.keep_delivered,
    ).create()


def _read_fd(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def queued_at_from_id(queue_id: str) -> float:
    """The enqueue time encoded in a queue id (seconds since the epoch)."""
    return int(queue_id[:13], 16) / 1_000_000
