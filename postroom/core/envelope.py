"""The spool envelope: what the listener knows about a queued message besides its bytes, as one typed value.

The listener (and `postroom check`) builds a `SpoolEnvelope`; `to_meta` turns it into the JSON object the
spool writes in front of the raw message; the delivery runner reads it back once per attempt with
`SpoolEnvelope.from_meta`. The stored object carries a version, ``"v": 2``:

    {"v": 2, "id", "tenant", "mailbox", "mailbox_hash", "received_at", "queued_at", "mail_from", "rcpt_to",
     "client_ip", "helo", "tls", "session", "transaction",
     "auth": {"spf", "dkim": [...], "dmarc"} | null,
     "spam": {"score", "required_score", "action", "symbols": [...], "subject"} | null,
     "virus": {"found", "name", "scanned"} | null,
     "verdicts": [{"stage", "filter", "result", "reason", "detail", "ms", "mode", "action", "failed_open"}]}

Version 1 (the previous release) had no "v" and kept filter facts in a dict keyed by filter name
(``facts["spf"]``, ``facts["auth"]``, ``facts["rspamd"]["spam"]``, ``facts["clamav"]["virus"]``); it still
reads. `facts_from_filters` does the same translation for a live transaction, so the filter-name keys are
known in this one place. Anything else — another version, a missing field, a wrong type — is an
`EnvelopeError`: the entry can never be delivered, and the runner moves it to corrupt/ at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from postroom.core.spool import SpoolError

VERSION = 2
LEGACY_VERSION = 1  # no "v" key: facts keyed by filter name


class EnvelopeError(SpoolError):
    """A spool entry's envelope is unreadable (corrupt, or written by an unknown version)."""


@dataclass(frozen=True)
class AuthResults:
    """SPF, DKIM (one per signature) and DMARC; each result is a JSON object with at least `result`."""

    spf: Mapping[str, Any] | None = None
    dkim: tuple[Mapping[str, Any], ...] = ()
    dmarc: Mapping[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "spf": _copy(self.spf),
            "dkim": [dict(sig) for sig in self.dkim],
            "dmarc": _copy(self.dmarc),
        }


@dataclass(frozen=True)
class SpamReport:
    score: float
    required_score: float | None
    action: str
    symbols: tuple[str, ...] = ()
    subject: str | None = None  # Rspamd's proposed subject, for "rewrite subject"

    def as_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {
            "score": self.score,
            "required_score": self.required_score,
            "action": self.action,
            "symbols": list(self.symbols),
        }
        if self.subject is not None:
            report["subject"] = self.subject
        return report


@dataclass(frozen=True)
class VirusReport:
    found: bool
    name: str | None = None
    scanned: bool = True  # False: accepted unscanned (too large for the scanner)

    def as_dict(self) -> dict[str, Any]:
        report: dict[str, Any] = {"found": self.found, "name": self.name}
        if not self.scanned:
            report["scanned"] = False
        return report


@dataclass(frozen=True)
class VerdictRecord:
    """One filter's result at one stage: an entry of the ticket's verdict trail."""

    stage: str
    filter: str
    result: str
    reason: str = ""
    detail: str = ""
    ms: float = 0.0
    mode: str = "enforce"
    action: str = "accept"
    failed_open: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "filter": self.filter,
            "result": self.result,
            "reason": self.reason,
            "detail": self.detail,
            "ms": self.ms,
            "mode": self.mode,
            "action": self.action,
            "failed_open": self.failed_open,
        }


@dataclass(frozen=True)
class FilterFacts:
    """What the filters found that the ticket reports."""

    auth: AuthResults | None = None
    spam: SpamReport | None = None
    virus: VirusReport | None = None


@dataclass(frozen=True)
class SpoolEnvelope:
    id: str
    tenant: str
    mailbox: str
    received_at: str  # ISO 8601 UTC, "Z" suffix
    mailbox_hash: str | None = None
    mail_from: str = ""  # "" for the null sender
    rcpt_to: tuple[str, ...] = ()
    client_ip: str = ""
    helo: str = ""
    tls: bool = False
    session: str = ""
    transaction: str = ""
    queued_at: float | None = None  # set by the spool when it stores the entry
    auth: AuthResults | None = None
    spam: SpamReport | None = None
    virus: VirusReport | None = None
    verdicts: tuple[VerdictRecord, ...] = field(default=())

    def with_facts(self, facts: FilterFacts) -> SpoolEnvelope:
        return replace(self, auth=facts.auth, spam=facts.spam, virus=facts.virus)

    # ---- codec --------------------------------------------------------------------------------------------

    def to_meta(self) -> dict[str, Any]:
        """The JSON object stored in the spool file (see the module docstring)."""
        meta: dict[str, Any] = {
            "v": VERSION,
            "kind": "ticket",
            "id": self.id,
            "tenant": self.tenant,
            "mailbox": self.mailbox,
            "mailbox_hash": self.mailbox_hash,
            "received_at": self.received_at,
            "mail_from": self.mail_from,
            "rcpt_to": list(self.rcpt_to),
            "client_ip": self.client_ip,
            "helo": self.helo,
            "tls": self.tls,
            "session": self.session,
            "transaction": self.transaction,
            "auth": self.auth.as_dict() if self.auth is not None else None,
            "spam": self.spam.as_dict() if self.spam is not None else None,
            "virus": self.virus.as_dict() if self.virus is not None else None,
            "verdicts": [v.as_dict() for v in self.verdicts],
        }
        if self.queued_at is not None:
            meta["queued_at"] = self.queued_at
        return meta

    @classmethod
    def from_meta(cls, meta: Any) -> SpoolEnvelope:
        """Read a stored envelope of this or the previous version; EnvelopeError for anything else."""
        if not isinstance(meta, Mapping):
            raise EnvelopeError("envelope is not a JSON object")
        version = meta.get("v", LEGACY_VERSION)
        if version == VERSION:
            facts = FilterFacts(
                auth=_field(meta, "auth", _auth, optional=True),
                spam=_field(meta, "spam", _spam, optional=True),
                virus=_field(meta, "virus", _virus, optional=True),
            )
        elif version == LEGACY_VERSION:
            facts = _field(meta, "facts", facts_from_filters, optional=True) or FilterFacts()
        else:
            raise EnvelopeError(f"unknown envelope version {version!r}")
        queued_at = meta.get("queued_at")
        return cls(
            id=_field(meta, "id", _str),
            tenant=_field(meta, "tenant", _str),
            mailbox=_field(meta, "mailbox", _str),
            received_at=_field(meta, "received_at", _str),
            mailbox_hash=_field(meta, "mailbox_hash", _str, optional=True),
            mail_from=_field(meta, "mail_from", _str, optional=True) or "",
            rcpt_to=tuple(_field(meta, "rcpt_to", _str_list, optional=True) or ()),
            client_ip=_field(meta, "client_ip", _str, optional=True) or "",
            helo=_field(meta, "helo", _str, optional=True) or "",
            tls=bool(meta.get("tls", False)),
            session=_field(meta, "session", _str, optional=True) or "",
            transaction=_field(meta, "transaction", _str, optional=True) or "",
            queued_at=float(queued_at) if isinstance(queued_at, int | float) else None,
            verdicts=tuple(_field(meta, "verdicts", _verdicts, optional=True) or ()),
            auth=facts.auth,
            spam=facts.spam,
            virus=facts.virus,
        )


def facts_from_filters(facts: Any) -> FilterFacts:
    """Typed facts from the filters' data, keyed by filter name (a transaction's `facts`, a v1 envelope).

    `auth` is the DKIM/DMARC filter's full result; without it, what SPF alone found.
    """
    if not isinstance(facts, Mapping):
        raise EnvelopeError("filter facts are not a JSON object")
    auth = _auth(facts["auth"]) if isinstance(facts.get("auth"), Mapping) else None
    if auth is None and isinstance(facts.get("spf"), Mapping):
        auth = AuthResults(spf=dict(facts["spf"]))
    return FilterFacts(
        auth=auth,
        spam=_spam(_under(facts, "rspamd", "spam")),
        virus=_virus(_under(facts, "clamav", "virus")),
    )


def tenant_of(meta: Any) -> str:
    """The tenant a stored envelope names, "" when it names none (a scan's look, not a full parse)."""
    tenant = meta.get("tenant") if isinstance(meta, Mapping) else None
    return tenant if isinstance(tenant, str) else ""


# ---- field readers: each raises EnvelopeError on a value of the wrong shape --------------------------------


def _field(meta: Mapping[str, Any], key: str, read: Any, *, optional: bool = False) -> Any:
    value = meta.get(key)
    if value is None:
        if optional:
            return None
        raise EnvelopeError(f"envelope has no {key!r}")
    try:
        return read(value)
    except EnvelopeError as exc:
        raise EnvelopeError(f"envelope field {key!r}: {exc}") from None


def _under(facts: Mapping[str, Any], filter_name: str, key: str) -> Any:
    data = facts.get(filter_name)
    return data.get(key) if isinstance(data, Mapping) else None


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise EnvelopeError(f"expected a string, got {type(value).__name__}")
    return value


def _str_list(value: Any) -> list[str]:
    if not isinstance(value, list):
        raise EnvelopeError(f"expected a list, got {type(value).__name__}")
    return [_str(item) for item in value]


def _object(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise EnvelopeError(f"expected an object, got {type(value).__name__}")
    return dict(value)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EnvelopeError(f"expected a number, got {type(value).__name__}")
    return float(value)


def _auth(value: Any) -> AuthResults | None:
    if value is None:
        return None
    data = _object(value)
    dkim = data.get("dkim") or []
    if not isinstance(dkim, list):
        raise EnvelopeError("auth.dkim is not a list")
    return AuthResults(
        spf=_object(data["spf"]) if data.get("spf") is not None else None,
        dkim=tuple(_object(sig) for sig in dkim),
        dmarc=_object(data["dmarc"]) if data.get("dmarc") is not None else None,
    )


def _spam(value: Any) -> SpamReport | None:
    if value is None:
        return None
    data = _object(value)
    required = data.get("required_score")
    subject = data.get("subject")
    return SpamReport(
        score=_number(data.get("score")),
        required_score=None if required is None else _number(required),
        action=_str(data.get("action")),
        symbols=tuple(_str_list(data.get("symbols") or [])),
        subject=None if subject is None else _str(subject),
    )


def _virus(value: Any) -> VirusReport | None:
    if value is None:
        return None
    data = _object(value)
    name = data.get("name")
    return VirusReport(
        found=bool(data.get("found", False)),
        name=None if name is None else _str(name),
        scanned=bool(data.get("scanned", True)),
    )


def _verdicts(value: Any) -> list[VerdictRecord]:
    if not isinstance(value, list):
        raise EnvelopeError("verdicts is not a list")
    records = []
    for item in value:
        data = _object(item)
        records.append(
            VerdictRecord(
                stage=_str(data.get("stage")),
                filter=_str(data.get("filter")),
                result=_str(data.get("result")),
                reason=str(data.get("reason", "")),
                detail=str(data.get("detail", "")),
                ms=_number(data.get("ms", 0.0)),
                mode=str(data.get("mode", "enforce")),
                action=str(data.get("action", "accept")),
                failed_open=bool(data.get("failed_open", False)),
            )
        )
    return records


def _copy(result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if result is None else dict(result)
