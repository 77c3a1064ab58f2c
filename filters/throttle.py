"""Abuse throttling, like Postfix's anvil, plus the dynamic block-list.

Stages and limits (per minute; 0 disables one):
- CONNECT: block-list → "throttle.blocked" (554); connections per client IP → "throttle.connection_rate"
  (421); concurrent sessions per client IP → "throttle.concurrency" (421). The slot is given back by
  `session_closed`, which the listener calls when any session ends.
- MAIL: messages per client IP and per envelope sender → "throttle.message_rate" (451). The null sender has
  no per-sender limit (bounces from many hosts would share one key).
- RCPT: recipients per client IP → "throttle.recipient_rate"; messages per tenant → "throttle.message_rate"
  (451 for that recipient only, so one busy tenant doesn't hold up the others' mail). The tenant key is the
  recipient's whole domain (`acme.helpdesk.example`): unique per tenant without knowing routing; a message is
  counted once per tenant, at its first recipient there.

`record_refusal`, called by the listener on every refusal, feeds the auto-block: `auto_block_rejects`
refusals the client earned within `auto_block_window` block its address for `block_duration`.

State lives in `MemoryThrottleStore` + `LocalBlockList`, or in Redis when `deps.redis` is set, so all nodes
share one limit. A store fault is a temperror ("throttle.unavailable"): 451, or flagged fail-open.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

from filters.base import Connection, Filter, Result, Stage, Transaction
from filters.blocklist import BlockEntry, BlockList, BlockListFileError, LocalBlockList, client_address
from filters.config import ThrottleConfig
from filters.deps import FilterDeps
from filters.throttle_store import MemoryThrottleStore, RateLimit, StoreUnavailable, ThrottleStore
from postroom.core.replies import FILTER_REPLIES
from postroom.core.smtp_limits import ERROR_LIMIT_REASON

log = logging.getLogger("postroom.filters.throttle")

BLOCKED = "throttle.blocked"
CONCURRENCY = "throttle.concurrency"
CONNECTION_RATE = "throttle.connection_rate"
MESSAGE_RATE = "throttle.message_rate"
RECIPIENT_RATE = "throttle.recipient_rate"
MINUTE = 60.0
# Refusals the client earned although their reply is temporary (rate limits) or absent from the policy
# table (the listener's "routing": an unknown recipient, as in a dictionary attack; a session closed at the
# hard error limit).
CLIENT_FAULT_REASONS = frozenset(
    {"routing", ERROR_LIMIT_REASON, CONNECTION_RATE, CONCURRENCY, MESSAGE_RATE, RECIPIENT_RATE}
)


def counts_toward_block(reason: str) -> bool:
    """Whether a refusal was earned by the client.

    Infrastructure faults (a scanner down: reasons absent from the policy table), greylisting and other
    temporary answers must never get a well-behaved client blocked; nor may the block itself extend the block.
    """
    if reason in CLIENT_FAULT_REASONS:
        return True
    reply = FILTER_REPLIES.get(reason)
    return reason != BLOCKED and reply is not None and reply.permanent


def tenant_key(address: str) -> str:
    """The recipient's domain, lower-cased: one key per tenant sub-domain."""
    return address.rpartition("@")[2].strip().strip(">").lower()


class ThrottleFilter(Filter):
    name = "throttle"
    stages = frozenset({Stage.CONNECT, Stage.MAIL, Stage.RCPT})

    def __init__(
        self, cfg: ThrottleConfig, store: ThrottleStore, blocklist: BlockList, deps: FilterDeps
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.blocklist = blocklist
        self.clock = deps.clock

    async def check(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
        try:
            if stage is Stage.CONNECT:
                return await self._connect(conn)
            if stage is Stage.MAIL and txn is not None:
                return await self._admit(self._mail_limits(conn, txn), conn) or Result.passed()
            if stage is Stage.RCPT and txn is not None:
                return await self._admit(self._rcpt_limits(conn, txn), conn) or Result.passed()
        except StoreUnavailable as exc:
            return Result.temperror("throttle.unavailable", str(exc))
        return Result.skipped()

    async def _connect(self, conn: Connection) -> Result:
        now = self.clock()
        entry = await self.blocklist.lookup(conn.peer_ip, now)
        if entry is not None:
            until = datetime.fromtimestamp(entry.expires_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return Result.failed(BLOCKED, f"{conn.peer_ip} blocked until {until}")
        ip = _ip_key(conn)
        limits = _per_minute(
            f"conn:{ip}", self.cfg.ip_connections_per_minute, CONNECTION_RATE, f"client {ip}"
        )
        refusal = await self._admit(limits, conn)
        if refusal is not None:
            return refusal
        if self.cfg.ip_concurrency and not await self.store.acquire_slot(
            f"slots:{ip}", conn.session_id, self.cfg.ip_concurrency, self.cfg.slot_lease, now
        ):
            return Result.failed(CONCURRENCY, f"too many concurrent connections from {ip}")
        return Result.passed()

    def _mail_limits(self, conn: Connection, txn: Transaction) -> list[RateLimit]:
        ip = _ip_key(conn)
        limits = _per_minute(f"msg:ip:{ip}", self.cfg.ip_messages_per_minute, MESSAGE_RATE, f"client {ip}")
        sender = txn.mail_from.strip("<>").lower()
        if sender:
            limit = self.cfg.sender_messages_per_minute
            limits += _per_minute(f"msg:sender:{sender}", limit, MESSAGE_RATE, f"sender {sender}")
        return limits

    def _rcpt_limits(self, conn: Connection, txn: Transaction) -> list[RateLimit]:
        ip = _ip_key(conn)
        limits = _per_minute(
            f"rcpt:ip:{ip}", self.cfg.ip_recipients_per_minute, RECIPIENT_RATE, f"client {ip}"
        )
        tenant = tenant_key(txn.rcpt)
        # txn.rcpt_to holds the recipients accepted so far: the tenant's message was counted at the first.
        if tenant and tenant not in {tenant_key(r) for r in txn.rcpt_to}:
            limit = self.cfg.tenant_messages_per_minute
            limits += _per_minute(f"msg:tenant:{tenant}", limit, MESSAGE_RATE, f"tenant {tenant}")
        return limits

    async def _admit(self, limits: list[RateLimit], conn: Connection) -> Result | None:
        """None when every limit admitted the event, else the refusal for the full one."""
        full = await self.store.admit(limits, self.clock()) if limits else None
        if full is None:
            return None
        log.info(
            "rate limit reached",
            extra={"event": "throttled", "client_ip": conn.peer_ip, "key": full.key, "limit": full.limit},
        )
        return Result.failed(full.reason, f"limit reached for {full.label}")

    async def session_closed(self, conn: Connection) -> None:
        """Give back the session's concurrency slot (idempotent; a lost call is healed by the slot lease)."""
        if not self.cfg.ip_concurrency:
            return
        try:
            await self.store.release_slot(f"slots:{_ip_key(conn)}", conn.session_id)
        except StoreUnavailable as exc:
            log.warning("slot not released", extra={"event": "throttle_error", "error": str(exc)})

    async def record_refusal(self, conn: Connection, reason: str) -> None:
        """Count a refusal against the client; enough of them within the window block its address."""
        if self.cfg.auto_block_rejects <= 0 or not counts_toward_block(reason):
            return
        now = self.clock()
        try:
            address = client_address(conn.peer_ip)
            refusals = await self.store.count(f"refusals:{address}", self.cfg.auto_block_window, now)
            if refusals < self.cfg.auto_block_rejects:
                return
            entry = BlockEntry(
                network=f"{address}/{address.max_prefixlen}",
                reason=f"{refusals} refusals within {self.cfg.auto_block_window:g}s, last {reason}",
                expires_at=now + self.cfg.block_duration,
                created_at=now,
                source="auto",
            )
            await self.blocklist.add(entry)
        except (StoreUnavailable, BlockListFileError, ValueError, OSError) as exc:
            log.warning("refusal not recorded", extra={"event": "throttle_error", "error": str(exc)})
            return
        log.warning(
            "client auto-blocked",
            extra={
                "event": "auto_block",
                "client_ip": conn.peer_ip,
                "until": entry.expires_at,
                "reason": reason,
            },
        )


def _per_minute(key: str, limit: int, reason: str, label: str) -> list[RateLimit]:
    """The limit as a list to send to the store; empty when the limit is disabled (0)."""
    return [RateLimit(key, limit, MINUTE, reason, label)] if limit else []


def _ip_key(conn: Connection) -> str:
    """The client address as counted: IPv4-mapped IPv6 counts as the IPv4 address it is."""
    try:
        return str(client_address(conn.peer_ip))
    except ValueError:
        return conn.peer_ip


def build(cfg: ThrottleConfig, deps: FilterDeps) -> ThrottleFilter:
    if deps.redis is not None:
        # Imported here so a deployment without Redis never loads the client.
        from filters.blocklist_redis import RedisBlockList
        from filters.throttle_redis import RedisThrottleStore

        return ThrottleFilter(
            cfg,
            RedisThrottleStore(deps.redis, cfg.redis_key_prefix),
            RedisBlockList(deps.redis, cfg.redis_key_prefix),
            deps,
        )
    path = Path(cfg.blocklist_file) if cfg.blocklist_file else None
    return ThrottleFilter(cfg, MemoryThrottleStore(), LocalBlockList(path), deps)
