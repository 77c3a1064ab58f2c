"""Opening spool files without following links: what the spool reads must be its own regular files.

A symbolic link planted in a state directory (dead/ pointing at /etc/shadow, say) would otherwise be read,
shown by `dead-letter show` and sent to the helpdesk by a replay. O_NOFOLLOW refuses a link as the last path
component; the fstat refuses FIFOs (a read would block), devices and directories.
"""

from __future__ import annotations

import errno
import os
import stat


class NotRegularFile(OSError):
    """The path is a symbolic link or not a regular file."""


def open_regular(path: str, flags: int = os.O_RDONLY) -> int:
    """An open descriptor of `path`, which must be a regular file and not a symlink (FileNotFoundError
    when it is missing, NotRegularFile when it is something else)."""
    try:
        # O_NONBLOCK: opening a FIFO would otherwise wait for a writer. Regular files ignore the flag.
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotRegularFile(errno.ELOOP, "is a symbolic link, refused", path) from None
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "is not a regular file, refused", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_regular(path: str) -> bytes:
    """The whole content of a regular file (see `open_regular`)."""
    with os.fdopen(open_regular(path), "rb") as fh:
        return fh.read()


def is_regular(path: str) -> bool:
    """Whether `path` itself (not what a link points to) is a regular file."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
