"""DKIM signing of submitted messages (RFC 6376) with dkimpy, and key generation for tests and operators.

Signing hashes the whole body and does an RSA operation in pure Python (a few ms, more for big messages), so
`DkimSigner.sign` runs it in a worker thread to keep the event loop responsive.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dkim

from outbound.config import DkimConfig

log = logging.getLogger("postroom.outbound.dkim")

# Relaxed header and body canonicalization survives the re-folding and whitespace changes relays make.
CANONICALIZATION = (b"relaxed", b"relaxed")


class DkimKeyError(Exception):
    """A configured private key cannot be read or parsed."""


def sign_message(
    raw: bytes, *, domain: str, selector: str, private_key_pem: bytes, headers: Sequence[str]
) -> bytes:
    """`raw` with a DKIM-Signature header prepended (d=`domain`, s=`selector`)."""
    signature = dkim.sign(
        raw,
        selector.encode("ascii"),
        domain.encode("ascii"),
        private_key_pem,
        canonicalize=CANONICALIZATION,
        include_headers=[h.encode("ascii") for h in headers],
    )
    return bytes(signature) + raw


def generate_key(bits: int = 2048) -> tuple[bytes, str]:
    """A new RSA key: (PKCS#8 PEM private key, the TXT record value to publish at <selector>._domainkey)."""
    # cryptography is imported where used: ~7 MB in every listener that never makes or reads a key.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem, dns_txt_value(pem)


def dns_txt_value(private_key_pem: bytes) -> str:
    """The DKIM TXT record value (v=DKIM1; k=rsa; p=...) for a PEM RSA private key."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_key_pem, password=None)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return f"v=DKIM1; k=rsa; p={base64.b64encode(spki).decode()}"


def write_private_key(path: Path, pem: bytes) -> None:
    """Create `path` readable by its owner only; refuses to overwrite an existing key."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


@dataclass(frozen=True)
class _CachedKey:
    mtime_ns: int
    pem: bytes


class DkimSigner:
    """Signs with the key of the From: domain, or of its nearest configured parent domain.

    Key files are re-read when their modification time changes, so a key rotation needs no restart.
    """

    def __init__(self, cfg: DkimConfig) -> None:
        self.selector = cfg.selector
        self.headers = list(cfg.headers)
        self._paths: Mapping[str, Path] = {domain: Path(path) for domain, path in cfg.keys.items()}
        self._cache: dict[Path, _CachedKey] = {}
        self._lock = threading.Lock()

    def signing_domain(self, from_domain: str) -> str | None:
        """The configured domain whose key signs mail from `from_domain` (None: sign nothing)."""
        labels = from_domain.lower().rstrip(".").split(".")
        for i in range(len(labels) - 1):
            candidate = ".".join(labels[i:])
            if candidate in self._paths:
                return candidate
        return None

    def check_keys(self) -> None:
        """Read and parse every configured key; raises DkimKeyError naming the first bad one."""
        for domain in self._paths:
            self._private_key(domain)

    async def sign(self, raw: bytes, from_domain: str) -> bytes:
        """`raw` signed for `from_domain`, or unchanged when no key covers it."""
        domain = self.signing_domain(from_domain)
        if domain is None:
            log.warning("no DKIM key for sender domain, sending unsigned", extra={"domain": from_domain})
            return raw
        return await asyncio.to_thread(self._sign_blocking, raw, domain)

    def _sign_blocking(self, raw: bytes, domain: str) -> bytes:
        return sign_message(
            raw,
            domain=domain,
            selector=self.selector,
            private_key_pem=self._private_key(domain),
            headers=self.headers,
        )

    def _private_key(self, domain: str) -> bytes:
        path = self._paths[domain]
        try:
            mtime_ns = path.stat().st_mtime_ns
            with self._lock:
                cached = self._cache.get(path)
                if cached is not None and cached.mtime_ns == mtime_ns:
                    return cached.pem
                # dkimpy's PEM reader expects LF line ends.
                pem = path.read_bytes().replace(b"\r\n", b"\n")
                dkim.crypto.parse_pem_private_key(pem)
                self._cache[path] = _CachedKey(mtime_ns, pem)
                return pem
        except OSError as exc:
            raise DkimKeyError(f"dkim.keys.{domain}: cannot read {path}: {exc.strerror or exc}") from exc
        except dkim.crypto.UnparsableKeyError as exc:
            raise DkimKeyError(f"dkim.keys.{domain}: {path} is not a PEM RSA private key") from exc
