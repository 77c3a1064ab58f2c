"""Group commit for directory fsyncs: one fsync(2) covers every rename made before it started.

Every DATA ends with "rename into incoming/, fsync incoming/". Under load several spool threads do that at
once; each needs *a* directory fsync that began after its own rename, not one of its own. So a caller
arriving while a sync is running waits for it to end and then for the next one, which one of the waiting
callers runs on behalf of all of them — Postgres's and MySQL's group commit, applied to a directory.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectorySync:
    """Thread-safe, coalescing fsync of one directory.

    Callers take a ticket; `_covered` is the highest ticket known durable. A sync that starts when tickets
    up to N have been handed out covers 1..N, because each caller renames before it takes its ticket.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._cond = threading.Condition()
        self._issued = 0
        self._covered = 0
        self._running = False
        self.fsyncs = 0  # fsyncs actually run, for tests and the curious

    def sync(self) -> None:
        """Return once a directory fsync that started after this call has finished; raise its error."""
        with self._cond:
            self._issued += 1
            ticket = self._issued
            while self._covered < ticket:
                if self._running:
                    self._cond.wait()
                    continue
                self._lead()

    def _lead(self) -> None:
        """Run one fsync for every ticket issued so far; called and returning with the condition held.

        On failure nothing is marked covered: a waiter leads the next attempt and gets its own answer.
        """
        self._running = True
        covers = self._issued
        succeeded = False
        self._cond.release()
        try:
            fsync_directory(self.directory)
            succeeded = True
        finally:
            self._cond.acquire()
            self._running = False
            self.fsyncs += 1
            if succeeded:
                self._covered = max(self._covered, covers)
            self._cond.notify_all()
