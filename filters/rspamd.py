"""Rspamd at the DATA stage, over its HTTP protocol (POST /checkv2) with httpx's request model.

Requests go through `postroom.core.httpclient`'s lean transport, one per scan in flight, as the webhook's do:
httpx's AsyncClient over httpcore cost far more CPU per request (docs/benchmark.md). Rspamd (3.4)
answers `Connection: close`, so every scan opens a connection; the transport reuses one whenever a Rspamd or
proxy in front of it keeps it open.

The envelope goes in request headers (IP, Helo, From, one Rcpt per recipient, Queue-Id, Hostname, User), the
message as the body. Rspamd's action decides:

- "reject" → fail `spam.reject` (554); "soft reject" → `spam.soft_reject`, "greylist" → `spam.greylist` (451);
- "add header" / "rewrite subject" → accepted, marked spam by its action, `X-Spam: Yes` added to the message
  (by the chain, when the filter is enforced);
- "no action" → pass.

Facts, always: ``{"spam": {"score", "required_score", "action", "symbols": [sorted names]}}`` (plus
"subject", Rspamd's proposed subject, for "rewrite subject"). Any transport or protocol fault is a
`temperror`: 451 from the chain, or an accepted, flagged verdict with `fail_open`.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any

import httpx

from filters.base import Connection, Filter, Outcome, Result, Stage, Transaction
from filters.config import RspamdConfig
from filters.deps import FilterDeps
from postroom.core.configload import parse_http_url
from postroom.core.httpclient import KeepAliveTransport, TransportSlots, body_request

log = logging.getLogger("postroom.filters.rspamd")

SPAM_HEADER = ("X-Spam", "Yes")
# A /checkv2 reply is a few KB of JSON; a longer one is cut here and then fails to parse (a temperror).
MAX_REPLY_BYTES = 4 * 1024 * 1024
# Rspamd action → the reason of a refusal (the policy table maps it to a reply).
_REFUSALS = {"reject": "spam.reject", "soft reject": "spam.soft_reject", "greylist": "spam.greylist"}
_MARKED_SPAM = frozenset({"add header", "rewrite subject"})
_KNOWN_ACTIONS = frozenset({*_REFUSALS, *_MARKED_SPAM, "no action"})


class RspamdReplyError(ValueError):
    """Rspamd answered, but not with a scan result we understand."""


def request_headers(conn: Connection, txn: Transaction, password: str = "") -> list[tuple[str, str]]:
    """The /checkv2 envelope headers; a list because Rcpt repeats once per recipient."""
    headers = [("IP", conn.peer_ip), ("Queue-Id", txn.queue_id)]
    if conn.helo:
        headers.append(("Helo", conn.helo))
    # A null sender sends no From: Rspamd then treats the message as a bounce, as an MTA would.
    if txn.mail_from:
        headers.append(("From", txn.mail_from))
    headers.extend(("Rcpt", rcpt) for rcpt in txn.rcpt_to)
    # Only a name the FQDN stage resolved; "unknown" would make Rspamd score a missing rDNS we never checked.
    if conn.reverse_name:
        headers.append(("Hostname", conn.reverse_name))
    if conn.auth_user:
        headers.append(("User", conn.auth_user))
    if password:
        headers.append(("Password", password))
    return headers


def parse_scan(body: Any) -> dict[str, Any]:
    """The spam facts from a /checkv2 JSON reply."""
    if not isinstance(body, dict):
        raise RspamdReplyError("reply is not a JSON object")
    action = body.get("action")
    if action not in _KNOWN_ACTIONS:
        raise RspamdReplyError(f"unknown action {action!r}")
    symbols = body.get("symbols") or {}  # an empty result may come as {} or []
    if not isinstance(symbols, dict):
        raise RspamdReplyError("symbols is not an object")
    try:
        spam: dict[str, Any] = {
            "score": float(body["score"]),
            "required_score": float(body["required_score"]),
            "action": action,
            "symbols": sorted(str(name) for name in symbols),
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise RspamdReplyError(f"missing or invalid score: {exc}") from None
    if action == "rewrite subject" and isinstance(body.get("subject"), str):
        spam["subject"] = body["subject"]
    return spam


class RspamdFilter(Filter):
    name = "rspamd"
    stages = frozenset({Stage.DATA})

    def __init__(self, cfg: RspamdConfig, slots: TransportSlots) -> None:
        self.cfg = cfg
        self.slots = slots
        # httpx.AsyncClient(base_url=...).post("/checkv2") appended to the base path: the same here.
        self.check_url = httpx.URL(cfg.url.rstrip("/") + "/checkv2")

    async def check(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
        if txn is None:
            return Result.skipped("no message")
        # UTF-8 bytes: SMTPUTF8 senders and HELO names are not ASCII, httpx's default for str values.
        headers = [(k.encode(), v.encode()) for k, v in request_headers(conn, txn, self.cfg.password)]
        request = body_request(self.check_url, txn.message, headers)
        # The transport has no timeouts of its own: the chain's bounds the whole scan, the wait for a free
        # slot included, and a hung Rspamd becomes "rspamd.timeout" there.
        slot = await self.slots.acquire()
        try:
            response = await slot.handle_async_request(request)
            await response.aread()
        except httpx.TransportError as exc:
            return Result.temperror("rspamd.unavailable", f"cannot reach Rspamd at {self.cfg.url}: {exc}")
        finally:
            self.slots.release(slot)
        if response.status_code != 200:
            return Result.temperror("rspamd.error", f"Rspamd answered HTTP {response.status_code}")
        try:
            spam = parse_scan(response.json())
        except ValueError as exc:  # RspamdReplyError, or a body that is not JSON
            return Result.temperror("rspamd.bad_reply", f"unusable Rspamd reply: {exc}")
        return self._judge(conn, txn, spam)

    def _judge(self, conn: Connection, txn: Transaction, spam: dict[str, Any]) -> Result:
        action = spam["action"]
        detail = f"{action}, score {spam['score']:.2f} of {spam['required_score']:.2f}"
        log.info(
            "rspamd result",
            extra={
                "event": "spam_check",
                "queue_id": txn.queue_id,
                "client_ip": conn.peer_ip,
                "action": action,
                "score": spam["score"],
                "symbols": spam["symbols"],
            },
        )
        reason = _REFUSALS.get(action)
        if reason is not None:
            return Result.failed(reason, detail, spam=spam)
        marks = (SPAM_HEADER,) if action in _MARKED_SPAM else ()
        return Result(Outcome.PASS, "", detail, {"spam": spam}, mark_headers=marks)

    async def aclose(self) -> None:
        await self.slots.aclose()


def build(cfg: RspamdConfig, deps: FilterDeps) -> RspamdFilter:
    # Checked again here for a section built in code rather than loaded (where validate() already did).
    url = parse_http_url(cfg.url, "filters.rspamd.url")
    # Rspamd is a local service: no proxy variables from the environment are consulted (none ever are).
    tls = ssl.create_default_context() if url.scheme == "https" else None
    slots = TransportSlots(
        lambda: KeepAliveTransport(max_response_bytes=MAX_REPLY_BYTES, ssl_context=tls), cfg.max_connections
    )
    return RspamdFilter(cfg, slots)
