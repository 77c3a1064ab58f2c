"""The one format of a queue id, and the check every operator command runs on the ids it is given.

An id is 13 hex digits of microseconds since the epoch followed by 6 random hex digits, uppercase (see
`postroom.core.spool.new_queue_id`). An id becomes a file name under the spool: anything else — `../x`, an
absolute path, a NUL — is refused before it gets near the file system, not by accident of lookup order.
"""

from __future__ import annotations

import re

QUEUE_ID = re.compile(r"[0-9A-F]{19}")


class InvalidQueueId(ValueError):
    """Text given as a queue id that is not one."""


def parse_queue_id(text: str) -> str:
    """`text` as a queue id (hex digits in either case are accepted and uppercased), else InvalidQueueId."""
    candidate = text.strip().upper()
    if not QUEUE_ID.fullmatch(candidate):
        shown = text[:40] + ("..." if len(text) > 40 else "")
        raise InvalidQueueId(f"not a queue id: {shown!r} (expected 19 hex digits, as in '250 queued as ID')")
    return candidate


def is_queue_id(text: str) -> bool:
    return QUEUE_ID.fullmatch(text) is not None
