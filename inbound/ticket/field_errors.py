"""Each ticket field is computed on its own: a field whose input trips a reader falls back alone, and the
ticket says which fields fell back and why (`parse_errors`), instead of losing every field to one bad one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from inbound.ticket.mime_text import clean_header_text

log = logging.getLogger("postroom.normalize")
T = TypeVar("T")

MAX_ENTRIES = 50  # a message with 10,000 bad attachments still gets a bounded list
MAX_REASON_CHARS = 200


class FieldErrors:
    """The ticket's `parse_errors`: `{"field", "reason"}` entries, first come, deduplicated, bounded."""

    def __init__(self) -> None:
        self.entries: list[dict[str, str]] = []

    def add(self, field: str, reason: str) -> None:
        entry = {"field": field, "reason": clean_header_text(reason[:MAX_REASON_CHARS]) or "unknown"}
        if entry not in self.entries and len(self.entries) < MAX_ENTRIES:
            self.entries.append(entry)

    def compute(self, field: str, compute: Callable[[], T], fallback: T) -> T:
        """`compute()`, or `fallback` (noted) when it raises: hostile input can trip any reader, the stdlib's
        included (RecursionError on nested comments, UnicodeError from a codec, ValueError on a NUL)."""
        try:
            return compute()
        except Exception as exc:
            log.debug("ticket field %s fell back", field, exc_info=True)
            self.add(field, f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            return fallback

    def summary(self) -> str | None:
        """The one-line `parse_error`: every entry, or None when nothing fell back."""
        if not self.entries:
            return None
        # Whole-message reasons ("mime") read as they are; the others name their field.
        parts = (
            e["reason"] if e["field"] == "mime" else f"{e['field']}: {e['reason']}" for e in self.entries
        )
        return "; ".join(parts)[:1000]
