"""`postroom check`: the ticket a file would become, after the filters the config enables — nothing delivered.

Every stage runs as if the file came from `--client-ip` after `EHLO --helo` and `MAIL FROM:<--mail-from>`
(DNSBL, HELO, SPF, then DKIM/DMARC, ClamAV, Rspamd on the message). Throttling is skipped: it counts live
traffic, and a preview must not use up anyone's allowance.
"""

from __future__ import annotations

import email.parser
import email.policy
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parseaddr

from filters.base import Connection, Stage, Transaction
from filters.chain import Decision, FilterChain
from filters.deps import FilterDeps
from filters.registry import build_links
from filters.resolver import make_resolver
from inbound.delivery.runner import make_ticket_body
from postroom.app.config import Config
from postroom.core.envelope import SpoolEnvelope, VerdictRecord, facts_from_filters

SESSION_FILTERS = frozenset({"throttle"})
_HEADER_PARSER = email.parser.BytesHeaderParser(policy=email.policy.compat32)


@dataclass(frozen=True)
class Envelope:
    tenant: str
    mailbox: str
    mail_from: str | None  # None: take it from the message (Return-Path, else From)
    client_ip: str
    helo: str


def sender_of(raw: bytes) -> str:
    """The envelope sender a file most likely had: its Return-Path, else its From address ("" if neither)."""
    headers = _HEADER_PARSER.parsebytes(raw[:65536])
    for name in ("Return-Path", "From"):
        address = parseaddr(str(headers.get(name, "") or ""))[1]
        if address or (name == "Return-Path" and headers.get(name, "").strip() == "<>"):
            return address
    return ""


async def check_message(
    config: Config, raw: bytes, envelope: Envelope, index: int
) -> tuple[bytes, Decision | None]:
    """The ticket JSON for `raw`, and the refusal the filters would have answered (None if accepted)."""
    deps = FilterDeps(resolver=make_resolver(config.dns), hostname=config.smtp.hostname)
    links = [link for link in build_links(config.filters, deps) if link.filter.name not in SESSION_FILTERS]
    chain = FilterChain(links)
    mail_from = sender_of(raw) if envelope.mail_from is None else envelope.mail_from
    conn = Connection(session_id=f"check-{index}", peer_ip=envelope.client_ip, helo=envelope.helo, esmtp=True)
    txn = Transaction(queue_id=f"check-{index}", mail_from=mail_from, message=raw)
    rcpt = f"{envelope.mailbox}@{envelope.tenant}.{config.routing.domains[0]}"
    txn.rcpt_to.append(rcpt)
    decision = None
    try:
        for stage in (Stage.CONNECT, Stage.HELO):
            decision = decision or await chain.run(stage, conn, None)
        txn.verdicts.extend(conn.verdicts)
        for stage in (Stage.MAIL, Stage.DATA):
            decision = decision or await chain.run(stage, conn, txn)
    finally:
        await chain.aclose()
    trace = "".join(f"{name}: {value}\r\n" for name, value in txn.add_headers).encode()
    spooled = SpoolEnvelope(
        id=f"check-{index}",
        received_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        tenant=envelope.tenant,
        mailbox=envelope.mailbox,
        mail_from=mail_from,
        rcpt_to=(rcpt,),
        client_ip=envelope.client_ip,
        helo=envelope.helo,
        verdicts=tuple(VerdictRecord(**v.as_dict()) for v in txn.verdicts),
    ).with_facts(facts_from_filters(txn.facts))
    return make_ticket_body(trace + raw, spooled, config.webhook.max_inline_attachment_bytes), decision


def report_decision(name: str, decision: Decision | None) -> None:
    if decision is not None:
        print(f"postroom: {name}: would be refused: {decision.render()}", file=sys.stderr)
