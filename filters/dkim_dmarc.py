"""DKIM verification and DMARC evaluation at DATA, recorded in txn.facts["auth"] and Authentication-Results.

DKIM: dkimpy verifies every signature (up to MAX_SIGNATURES). dkimpy is blocking and fetches keys through
its `dnsfunc` hook, so verification runs in a worker thread with a key fetcher on a blocking twin of
Postroom's resolver and one deadline for all signatures. A key that cannot be fetched because of a DNS
failure is a temperror; a missing or malformed key is a permerror; a body or signature mismatch is a fail.

DMARC (RFC 7489): the policy is looked up at _dmarc.<From domain>, then at the organisational domain: the
public suffix plus one label, from the Public Suffix List that the `publicsuffixlist` package ships (read
from the installed package, never fetched at run time; a TLD absent from it counts as a public suffix of
one label). Relaxed alignment compares organisational domains. DMARC passes when SPF (txn.facts["spf"], from
the SPF filter) or a DKIM signature passes with an aligned domain. A failure under an applied p=reject is
"dmarc.reject" (550 5.7.1) when enforce_dmarc_reject is set, else recorded; p=quarantine and p=none are
recorded. When DNS trouble leaves a reject decision open (no policy, or an aligned signature whose key could
not be fetched), the result is "dmarc.temperror", a 451, so the sender retries instead of being misjudged.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import time
from dataclasses import asdict, dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from typing import Any

import authres
import authres.dmarc
import dkim
import dns.asyncresolver
import dns.exception
import dns.resolver
from publicsuffixlist import PublicSuffixList

from filters.base import Connection, Filter, Outcome, Result, Stage, Transaction
from filters.config import DkimDmarcConfig
from filters.deps import FilterDeps
from filters.resolver import sync_twin

# The logger keeps the filter's verdict name, "auth", so operators' log filters keep matching.
log = logging.getLogger("postroom.filters.auth")

MAX_SIGNATURES = 8  # each costs a DNS lookup and an RSA verification
_TAG = re.compile(rb"(?:^|;)\s*([a-z]+)\s*=\s*([^;]*)", re.IGNORECASE)
_SIGNATURE_FIELD = re.compile(rb"^dkim-signature[ \t]*:", re.IGNORECASE | re.MULTILINE)
_END_OF_HEADER = re.compile(rb"\r?\n\r?\n")


class _DkimpyLog(logging.LoggerAdapter[logging.Logger]):
    """dkimpy logs each unverifiable signature as an ERROR; to us it is a result, already in the verdict."""

    def error(self, msg: object, *args: object, **kwargs: Any) -> None:
        self.debug(msg, *args, **kwargs)


_dkimpy_log = _DkimpyLog(logging.getLogger("postroom.filters.auth.dkimpy"), {})


class KeyLookupFailed(Exception):
    """A DNS failure while fetching a DKIM key (not a DKIMException, so dkimpy lets it through)."""


@dataclass(frozen=True, slots=True)
class DkimSignatureResult:
    result: str  # pass, fail, permerror, temperror
    domain: str
    selector: str
    detail: str


class DkimKeyFetcher:
    """dkimpy's `dnsfunc`: TXT lookups on our resolver within a deadline, noting missing or broken keys."""

    def __init__(self, resolver: dns.resolver.Resolver, deadline: float) -> None:
        self.resolver = resolver
        self.deadline = deadline
        self.problem = ""

    def __call__(self, name: bytes, timeout: float = 5.0) -> bytes | None:
        remaining = min(timeout, self.deadline - time.monotonic())
        if remaining <= 0:
            raise KeyLookupFailed("DKIM verification time exhausted")
        qname = name.decode("ascii", "replace")
        try:
            answer = self.resolver.resolve(qname, "TXT", lifetime=remaining, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            self.problem = f"no key at {qname.rstrip('.')}"
            return None
        except dns.exception.DNSException as exc:
            raise KeyLookupFailed(f"key lookup {qname}: {type(exc).__name__}") from exc
        record = b"".join(answer[0].strings)
        try:
            dkim.evaluate_pk(name, record)
        except dkim.DKIMException as exc:
            self.problem = f"unusable key at {qname.rstrip('.')}: {exc}"
        return record


def has_dkim_signature(message: bytes) -> bool:
    """Whether the header section has a DKIM-Signature field: without one there is nothing to verify, and
    neither a thread nor dkimpy's parse of the message is needed."""
    end = _END_OF_HEADER.search(message)
    header = message if end is None else message[: end.start() + 1]
    return _SIGNATURE_FIELD.search(header) is not None


def verify_dkim(message: bytes, resolver: dns.resolver.Resolver, budget: float) -> list[DkimSignatureResult]:
    """Verify every DKIM signature of a message. Blocking: run it in a worker thread."""
    deadline = time.monotonic() + budget
    try:
        verifier = dkim.DKIM(message, logger=_dkimpy_log)
    except dkim.DKIMException as exc:
        return [DkimSignatureResult("permerror", "", "", f"unparsable message: {exc}")]
    signatures = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    results = []
    for index, header in enumerate(signatures[:MAX_SIGNATURES]):
        tags = {k.lower(): v.strip() for k, v in _TAG.findall(header)}
        domain = re.sub(rb"\s+", b"", tags.get(b"d", b"")).decode("ascii", "replace").lower()
        selector = re.sub(rb"\s+", b"", tags.get(b"s", b"")).decode("ascii", "replace")
        fetcher = DkimKeyFetcher(resolver, deadline)
        try:
            verified = verifier.verify(idx=index, dnsfunc=fetcher)
        except KeyLookupFailed as exc:
            result, detail = "temperror", str(exc)
        except dkim.ValidationError as exc:
            result = "fail" if "body hash mismatch" in str(exc) else "permerror"
            detail = str(exc).split(" (", 1)[0]
        except dkim.DKIMException as exc:
            result, detail = "permerror", str(exc)
        else:
            if verified:
                result, detail = "pass", "good signature"
            elif fetcher.problem:
                result, detail = "permerror", fetcher.problem
            else:
                result, detail = "fail", "signature did not verify"
        results.append(DkimSignatureResult(result, domain, selector, detail))
    return results


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    found_at: str
    p: str
    sp: str
    adkim: str
    aspf: str
    pct: int


def parse_dmarc_record(found_at: str, text: str) -> DmarcRecord | None:
    tags = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = value.strip()
    p = tags.get("p", "").lower()
    if p not in ("none", "quarantine", "reject"):
        if "rua" not in tags:
            return None  # RFC 7489 §6.6.3: no valid policy and nowhere to report: do not apply DMARC
        p = "none"
    sp = tags.get("sp", "").lower()
    pct = tags.get("pct", "100")
    return DmarcRecord(
        found_at=found_at,
        p=p,
        sp=sp if sp in ("none", "quarantine", "reject") else p,
        adkim="s" if tags.get("adkim", "r").lower() == "s" else "r",
        aspf="s" if tags.get("aspf", "r").lower() == "s" else "r",
        pct=min(100, max(0, int(pct))) if pct.isdigit() else 100,
    )


@functools.cache
def _public_suffix_list() -> PublicSuffixList:
    """Parsed once per process, when the filter is built: parsing takes far longer than a check."""
    return PublicSuffixList()


def organizational_domain(domain: str) -> str:
    """RFC 7489 §3.2: the public suffix plus one label; a public suffix itself is its own."""
    name = domain.rstrip(".").lower()
    return _public_suffix_list().privatesuffix(name) or name


def aligned(domain: str, author_domain: str, mode: str) -> bool:
    if not domain:
        return False
    if mode == "s":
        return domain.lower() == author_domain
    return organizational_domain(domain) == organizational_domain(author_domain)


def author_domain(message: bytes) -> str:
    """The RFC5322.From domain, or "" unless the message has exactly one From with one domain."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(message)
    addresses = getaddresses([str(value) for value in headers.get_all("From", [])])
    domains = {address.rpartition("@")[2].lower().rstrip(">") for _, address in addresses if "@" in address}
    return domains.pop() if len(domains) == 1 else ""


def _sampled(message: bytes, pct: int) -> bool:
    """pct= sampling, keyed on the message so a retry of the same message gets the same decision."""
    return pct >= 100 or int.from_bytes(hashlib.sha256(message).digest()[:2], "big") % 100 < pct


class DkimDmarcFilter(Filter):
    # The verdict name and the ticket key of its facts (txn.facts["auth"]: SPF, DKIM and DMARC results);
    # both are part of the ticket format, so they keep the name "auth".
    name = "auth"
    stages = frozenset({Stage.DATA})

    def __init__(self, cfg: DkimDmarcConfig, deps: FilterDeps) -> None:
        _public_suffix_list()
        self.cfg = cfg
        self.hostname = deps.hostname
        self.resolver: dns.asyncresolver.Resolver = deps.resolver
        self.key_resolver = sync_twin(deps.resolver)
        self.dkim_budget = cfg.timeout * 0.8  # leaves the chain's timeout for the DMARC decision

    async def check(self, stage: Stage, conn: Connection, txn: Transaction | None) -> Result:
        if txn is None or not txn.message:
            return Result.skipped("no message")
        author = author_domain(txn.message)
        if has_dkim_signature(txn.message):
            verifying = self._verify_dkim(txn.message)
            signatures, record = await asyncio.gather(verifying, self.dmarc_record(author))
        else:
            signatures, record = [], await self.dmarc_record(author)
        spf: dict[str, Any] = dict(txn.facts.get("spf") or {"result": "none", "domain": "", "identity": ""})
        dmarc = self._evaluate(txn.message, author, record, spf, signatures)
        txn.add_headers.append(("Authentication-Results", self._header(spf, signatures, dmarc)))
        data = {"spf": spf, "dkim": [asdict(s) for s in signatures], "dmarc": dmarc}
        reason = "" if dmarc["result"] in ("pass", "none") else f"dmarc.{dmarc['result']}"
        if dmarc["result"] == "temperror" and self.cfg.enforce_dmarc_reject:
            return Result(Outcome.TEMPERROR, reason, dmarc["detail"], data)
        if dmarc["result"] == "fail" and dmarc["policy"] == "reject":
            outcome = Outcome.FAIL if self.cfg.enforce_dmarc_reject else Outcome.PASS
            return Result(outcome, "dmarc.reject", dmarc["detail"], data)
        return Result(Outcome.PASS, reason, dmarc["detail"], data)

    async def _verify_dkim(self, message: bytes) -> list[DkimSignatureResult]:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(verify_dkim, message, self.key_resolver, self.dkim_budget),
                timeout=self.dkim_budget + 0.1 * self.cfg.timeout,
            )
        except TimeoutError:
            return [DkimSignatureResult("temperror", "", "", "DKIM verification did not finish in time")]

    async def dmarc_record(self, author: str) -> DmarcRecord | dns.exception.DNSException | None:
        """The policy for the author domain: at the domain itself, else at its organisational domain."""
        if not author:
            return None
        for domain in dict.fromkeys((author, organizational_domain(author))):
            try:
                answer = await self.resolver.resolve(f"_dmarc.{domain}.", "TXT", search=False)
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                continue
            except dns.exception.DNSException as exc:
                log.info("dmarc lookup failed", extra={"domain": domain, "error": str(exc)})
                return exc
            texts = [b"".join(r.strings).decode("utf-8", "replace") for r in answer]
            records = [t for t in texts if t.startswith("v=DMARC1")]
            if len(records) == 1:
                return parse_dmarc_record(domain, records[0])
            if records:
                return None  # several records: RFC 7489 says DMARC is not applied
        return None

    def _evaluate(
        self,
        message: bytes,
        author: str,
        record: DmarcRecord | dns.exception.DNSException | None,
        spf: dict[str, Any],
        signatures: list[DkimSignatureResult],
    ) -> dict[str, Any]:
        verdict: dict[str, Any] = {"result": "none", "policy": "", "domain": author, "detail": ""}
        if not author:
            return verdict | {"result": "permerror", "detail": "no single From domain"}
        mode_dkim, mode_spf = (record.adkim, record.aspf) if isinstance(record, DmarcRecord) else ("r", "r")
        by_dkim = [s for s in signatures if aligned(s.domain, author, mode_dkim)]
        spf_aligned = aligned(spf.get("domain", ""), author, mode_spf)
        if any(s.result == "pass" for s in by_dkim):
            passed_by = "dkim"
        elif spf_aligned and spf.get("result") == "pass":
            passed_by = "spf"
        else:
            passed_by = ""
        if isinstance(record, dns.exception.DNSException):
            if passed_by:
                return verdict | {"result": "pass", "detail": f"aligned {passed_by} pass; policy unknown"}
            return verdict | {"result": "temperror", "detail": f"DMARC policy lookup for {author} failed"}
        if record is None:
            return verdict | {"detail": f"{author} publishes no DMARC policy"}
        policy = record.p if record.found_at == author else record.sp
        verdict["policy"] = policy
        if passed_by:
            return verdict | {"result": "pass", "detail": f"{author}: aligned {passed_by} pass"}
        could_pass = any(s.result == "temperror" for s in by_dkim) or (
            spf_aligned and spf.get("result") == "temperror"
        )
        if policy == "reject" and could_pass:
            return verdict | {"result": "temperror", "detail": f"{author}: aligned check failed temporarily"}
        applied = policy if _sampled(message, record.pct) else {"reject": "quarantine"}.get(policy, "none")
        return verdict | {
            "result": "fail",
            "policy": applied,
            "detail": f"{author}: no aligned SPF or DKIM pass",
        }

    def _header(
        self, spf: dict[str, Any], signatures: list[DkimSignatureResult], dmarc: dict[str, Any]
    ) -> str:
        results: list[Any] = []
        if spf.get("domain"):
            identity = "smtp_helo" if spf.get("identity") == "helo" else "smtp_mailfrom"
            results.append(authres.SPFAuthenticationResult(result=spf["result"], **{identity: spf["domain"]}))
        for sig in signatures or [DkimSignatureResult("none", "", "", "")]:
            results.append(
                authres.DKIMAuthenticationResult(
                    result=sig.result,
                    result_comment=sig.detail or None,
                    header_d=sig.domain or None,
                    header_s=sig.selector or None,
                )
            )
        results.append(
            authres.dmarc.DMARCAuthenticationResult(
                result=dmarc["result"],
                result_comment=f"p={dmarc['policy']}" if dmarc["policy"] else None,
                header_from=dmarc["domain"] or None,
            )
        )
        header = authres.AuthenticationResultsHeader(authserv_id=self.hostname, results=results)
        return str(header.header_value())


def build(cfg: DkimDmarcConfig, deps: FilterDeps) -> Filter:
    return DkimDmarcFilter(cfg, deps)
