"""Recipient routing: `local[+hash]@<tenant>.<mail-domain>` → (tenant, mailbox, hash), or a refusal.

This is what keeps Postroom from being an open relay: an address is accepted only when its domain is exactly
one label (the tenant) under a configured mail domain and its local part is a plain dot-atom. Everything else
— other domains, IP literals, `%` hacks, quoted local parts, trailing dots, nested `@` — is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from postroom.core.addresses import is_dot_atom
from postroom.core.replies import BAD_ADDRESS, RELAY_DENIED, UNKNOWN_TENANT, Reply

# RFC 1123 host label, lowercase; a tenant is one such label.
_TENANT_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
MAX_LOCAL_LENGTH = 64


@dataclass(frozen=True, slots=True)
class Route:
    address: str  # normalised: lowercase domain, local part as given
    tenant: str
    mailbox: str
    mailbox_hash: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    reply: Reply
    detail: str


class Router:
    def __init__(self, domains: Iterable[str], tenants: frozenset[str] | None = None) -> None:
        self.domains = tuple(sorted({d.lower().strip(".") for d in domains}, key=len, reverse=True))
        self.tenants = tenants

    @classmethod
    def from_files(cls, domains: Iterable[str], tenant_file: str) -> Router:
        return cls(domains, load_tenant_file(tenant_file) if tenant_file else None)

    def route(self, address: str) -> Route | Refusal:
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain:
            return Refusal(BAD_ADDRESS, "recipient must be local@domain")
        domain = domain.lower()
        suffix = self._matching_domain(domain)
        if suffix is None:
            return Refusal(RELAY_DENIED, f"<{address}>: we do not relay for {domain}")
        tenant = domain[: -len(suffix) - 1] if len(domain) > len(suffix) else ""
        if not _TENANT_RE.match(tenant):
            return Refusal(UNKNOWN_TENANT, f"<{address}>: no such tenant")
        if len(local) > MAX_LOCAL_LENGTH or not _plain_local_part(local):
            # Quoted strings, `%` routing and nested `@` never reach a mailbox: refuse as relay attempts.
            return Refusal(RELAY_DENIED, f"<{address}>: local part not accepted")
        if self.tenants is not None and tenant not in self.tenants:
            return Refusal(UNKNOWN_TENANT, f"<{address}>: no such tenant")
        mailbox, plus, mailbox_hash = local.partition("+")
        if not mailbox:
            return Refusal(UNKNOWN_TENANT, f"<{address}>: empty mailbox")
        return Route(
            address=f"{local}@{domain}",
            tenant=tenant,
            mailbox=mailbox.lower(),
            mailbox_hash=mailbox_hash if plus else None,
        )

    def _matching_domain(self, domain: str) -> str | None:
        for suffix in self.domains:
            if domain == suffix or domain.endswith("." + suffix):
                return suffix
        return None


def _plain_local_part(local: str) -> bool:
    """An ASCII RFC 5322 dot-atom without `%` (the classic relay hack): no quoting, no nested `@`."""
    return local.isascii() and "%" not in local and is_dot_atom(local)


def load_tenant_file(path: str | Path) -> frozenset[str]:
    """One tenant per line; blank lines and `#` comments ignored; names must be valid labels."""
    tenants = set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        name = line.split("#", 1)[0].strip().lower()
        if not name:
            continue
        if not _TENANT_RE.match(name):
            raise ValueError(f"{path}:{number}: invalid tenant name {name!r}")
        tenants.add(name)
    return frozenset(tenants)
