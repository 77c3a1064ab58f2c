"""Operator actions on the dead-letter directory: list, show, replay, purge.

A replay moves the same spool file back to incoming/, so the ticket keeps its id and therefore its
Idempotency-Key: a helpdesk that did receive an earlier attempt can recognise the duplicate.
"""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from postroom.core.envelope import SpoolEnvelope
from postroom.core.queue_ids import parse_queue_id
from postroom.core.spool import DEAD, INCOMING, Spool, SpoolError, queued_at_from_id

_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


@dataclass(frozen=True)
class DeadLetter:
    id: str
    tenant: str
    mailbox: str
    queued_at: float
    dead_at: float | None
    reason: str
    status: int | None
    attempts: int
    replays: int
    mail_from: str
    subject: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class DeadLetterFilter:
    tenant: str | None = None
    since: float | None = None  # dead_at (or queue time) at or after this epoch time
    reason: str | None = None  # substring, case-insensitive

    def matches(self, letter: DeadLetter) -> bool:
        if self.tenant is not None and letter.tenant != self.tenant:
            return False
        if self.since is not None and (letter.dead_at or letter.queued_at) < self.since:
            return False
        return self.reason is None or self.reason.lower() in letter.reason.lower()


def describe(spool: Spool, queue_id: str) -> DeadLetter:
    message = spool.read(DEAD, queue_id)
    envelope = SpoolEnvelope.from_meta(message.meta)
    state = spool.load_state(queue_id)
    headers = _HEADER_PARSER.parsebytes(message.raw[:65536])
    subject = str(headers.get("Subject", "") or "")
    return DeadLetter(
        id=queue_id,
        tenant=envelope.tenant,
        mailbox=envelope.mailbox,
        queued_at=queued_at_from_id(queue_id),
        dead_at=state.dead_at,
        reason=state.dead_reason,
        status=state.last_status,
        attempts=state.attempts,
        replays=state.replays,
        mail_from=envelope.mail_from,
        subject=" ".join(subject.split())[:200],
    )


def list_dead(spool: Spool, selection: DeadLetterFilter = DeadLetterFilter()) -> list[DeadLetter]:
    letters = []
    for queue_id in spool.ids(DEAD):
        try:
            letter = describe(spool, queue_id)
        except (SpoolError, OSError, ValueError):
            continue  # replayed or purged while we listed
        if selection.matches(letter):
            letters.append(letter)
    return letters


def show(spool: Spool, queue_id: str) -> dict[str, Any]:
    """Everything an operator needs to judge a dead letter: meta, delivery history, last response."""
    queue_id = parse_queue_id(queue_id)
    if spool.locate(queue_id) != DEAD:
        raise SpoolError(f"{queue_id} is not in the dead-letter directory")
    message = spool.read(DEAD, queue_id)
    state = spool.load_state(queue_id)
    return {
        "id": queue_id,
        "path": str(spool.path(DEAD, queue_id)),
        "meta": message.meta,
        "delivery": state.as_dict(),
        "size": len(message.raw),
        "headers": _HEADER_PARSER.parsebytes(message.raw[:65536]).items(),
    }


def replay(spool: Spool, queue_ids: Iterable[str], *, dry_run: bool = False) -> list[str]:
    """Move dead letters back to incoming/ with a fresh retry schedule; returns the ids moved."""
    moved = []
    for queue_id in map(parse_queue_id, queue_ids):
        if spool.locate(queue_id) != DEAD:
            raise SpoolError(f"{queue_id} is not in the dead-letter directory")
        if dry_run:
            moved.append(queue_id)
            continue
        state = spool.load_state(queue_id)
        state.add_history({"at": spool.clock(), "event": "replay", "previous_reason": state.dead_reason})
        state.replays += 1
        state.dead_reason, state.dead_at = "", None
        state.first_attempt_at = state.next_attempt_at = None
        spool.save_state(queue_id, state)
        if spool.move(queue_id, DEAD, INCOMING):
            moved.append(queue_id)
    return moved


def purge(spool: Spool, queue_ids: Iterable[str], *, dry_run: bool = False) -> list[str]:
    removed = []
    for queue_id in map(parse_queue_id, queue_ids):
        if spool.locate(queue_id) != DEAD:
            raise SpoolError(f"{queue_id} is not in the dead-letter directory")
        if dry_run or spool.remove(DEAD, queue_id):
            removed.append(queue_id)
    return removed
