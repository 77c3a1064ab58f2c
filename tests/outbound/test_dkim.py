"""DKIM signing: dkimpy verifies what we sign, against generated keys and the fixture key served by NSD."""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from outbound.dkim import (
    DkimKeyError,
    DkimSigner,
    dns_txt_value,
    generate_key,
    sign_message,
    write_private_key,
)
from postroom.app.config import config_from_mapping
from tests.outbound.submission_fixtures import DKIM_KEY, SIGNING_DOMAIN, dkim_dnsfunc
from tests.servers.dns import DnsServer

MESSAGE = (
    b"From: Helpdesk <support@mail-out.test>\r\n"
    b"To: alice@dest-one.test\r\n"
    b"Subject: Ticket #42\r\n"
    b"Date: Mon, 02 Nov 2026 10:00:00 +0000\r\n"
    b"Message-ID: <42@mail-out.test>\r\n"
    b"\r\n"
    b"An agent replied.\r\n"
)
HEADERS = ["From", "To", "Subject", "Date", "Message-ID"]
DnsFunc = Callable[..., bytes | None]


@pytest.fixture(scope="module")
def rsa_key() -> tuple[bytes, str]:
    return generate_key(2048)


def answering(records: dict[str, str]) -> DnsFunc:
    """A dkimpy dnsfunc answering from a dict; any other name is unknown."""

    def lookup(name: bytes, timeout: float = 5) -> bytes | None:
        value = records.get(name.decode().rstrip("."))
        return None if value is None else value.encode()

    return lookup


def signer_for(keys: dict[str, Path], selector: str = "s1") -> DkimSigner:
    section = {"selector": selector, "keys": {domain: str(path) for domain, path in keys.items()}}
    return DkimSigner(config_from_mapping({"dkim": section}).dkim)


def test_signature_verifies_and_breaks_when_the_message_changes(rsa_key: tuple[bytes, str]) -> None:
    pem, txt = rsa_key
    signed = sign_message(MESSAGE, domain="example.test", selector="s1", private_key_pem=pem, headers=HEADERS)
    assert signed.endswith(MESSAGE) and signed.startswith(b"DKIM-Signature: ")
    dnsfunc = answering({"s1._domainkey.example.test": txt})
    signature = dkim.DKIM(signed)
    assert signature.verify(dnsfunc=dnsfunc)
    assert signature.signature_fields[b"c"] == b"relaxed/relaxed"
    assert signature.include_headers == tuple(h.lower().encode() for h in HEADERS)

    assert not dkim.verify(signed.replace(b"An agent replied.", b"An agent replied!"), dnsfunc=dnsfunc)
    assert not dkim.verify(signed.replace(b"Ticket #42", b"Ticket #43"), dnsfunc=dnsfunc)
    # Relaxed canonicalization: re-folding whitespace in a signed header does not break it.
    assert dkim.verify(signed.replace(b"Subject: Ticket #42", b"Subject:  Ticket  #42"), dnsfunc=dnsfunc)


def test_the_fixture_key_verifies_through_the_test_dns_server(dns_server: DnsServer) -> None:
    signer = signer_for({SIGNING_DOMAIN: DKIM_KEY}, selector="postroom")
    signed = asyncio.run(signer.sign(MESSAGE, "mail-out.test"))
    signature = dkim.DKIM(signed)
    assert signature.verify(dnsfunc=dkim_dnsfunc(dns_server))
    assert (signature.domain, signature.selector) == (b"mail-out.test", b"postroom")


def test_the_nearest_configured_parent_domain_signs(tmp_path: Path, rsa_key: tuple[bytes, str]) -> None:
    key = tmp_path / "example.pem"
    key.write_bytes(rsa_key[0])
    signer = signer_for({"example.test": key})
    assert signer.signing_domain("example.test") == "example.test"
    assert signer.signing_domain("Notify.Example.TEST") == "example.test"
    assert signer.signing_domain("example.test.evil.test") is None
    assert signer.signing_domain("test") is None


def test_a_domain_without_key_is_sent_unsigned_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    signer = signer_for({})
    with caplog.at_level(logging.WARNING, logger="postroom.outbound.dkim"):
        assert asyncio.run(signer.sign(MESSAGE, "unkeyed.test")) == MESSAGE
    assert [r.domain for r in caplog.records] == ["unkeyed.test"]  # type: ignore[attr-defined]


def test_a_replaced_key_file_is_used_without_restart(tmp_path: Path, rsa_key: tuple[bytes, str]) -> None:
    key = tmp_path / "rotating.pem"
    key.write_bytes(rsa_key[0])
    signer = DkimSigner(
        config_from_mapping({"dkim": {"selector": "s1", "keys": {"example.test": str(key)}}}).dkim
    )
    first = asyncio.run(signer.sign(MESSAGE, "example.test"))
    new_pem, new_txt = generate_key(2048)
    key.write_bytes(new_pem)
    os.utime(key, ns=(0, key.stat().st_mtime_ns + 1_000_000))  # a distinct mtime even on coarse clocks
    second = asyncio.run(signer.sign(MESSAGE, "example.test"))
    old_dns = answering({"s1._domainkey.example.test": rsa_key[1]})
    new_dns = answering({"s1._domainkey.example.test": new_txt})
    assert dkim.verify(first, dnsfunc=old_dns) and not dkim.verify(first, dnsfunc=new_dns)
    assert dkim.verify(second, dnsfunc=new_dns)


def test_an_unparsable_key_is_reported_with_its_config_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    signer = DkimSigner(config_from_mapping({"dkim": {"keys": {"example.test": str(bad)}}}).dkim)
    with pytest.raises(
        DkimKeyError, match=r"dkim\.keys\.example\.test: .*bad\.pem is not a PEM RSA private key"
    ):
        signer.check_keys()


def test_generated_keys_are_private_files_with_a_matching_dns_record(tmp_path: Path) -> None:
    pem, txt = generate_key(1024)
    path = tmp_path / "new.pem"
    write_private_key(path, pem)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert txt == dns_txt_value(path.read_bytes())
    assert txt.startswith("v=DKIM1; k=rsa; p=MIG")
    with pytest.raises(FileExistsError):
        write_private_key(path, pem)
