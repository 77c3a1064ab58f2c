"""ClamAV filter against a real clamd (fixtures/clamav signature DB), through filters.chain and the policy."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import socket
import struct
from typing import Any

import dns.asyncresolver
import pytest

from filters.base import Connection, Mode, Stage, Transaction
from filters.chain import ChainLink, Decision, FilterChain
from filters.clamav import ClamavFilter, build
from filters.clamd_client import ClamdAddress, ClamdClient, ClamdError, ScanResult, parse_reply
from filters.config import ClamavConfig
from filters.deps import FilterDeps
from postroom.core.configload import ConfigError
from tests.servers.clamd import EICAR, EICAR_NAME, MARKER, MARKER_NAME, STREAM_MAX_LENGTH, ClamdServer

pytestmark = pytest.mark.integration

CLEAN = b"From: alice@example.org\r\nTo: help@acme.helpdesk.test\r\nSubject: printer\r\n\r\nIt jams.\r\n"


def eicar_attachment() -> bytes:
    """EICAR as a base64 attachment, the way it arrives by mail (clamd decodes MIME: ScanMail yes)."""
    payload = base64.b64encode(EICAR).decode()
    return (
        "From: mallory@example.org\r\nTo: help@acme.helpdesk.test\r\nSubject: invoice\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        "--b1\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n"
        "--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="invoice.com"\r\n\r\n'
        f"{payload}\r\n--b1--\r\n"
    ).encode()


def make_filter(address: str, **overrides: Any) -> ClamavFilter:
    # A generous timeout: several suites share this machine, and a slow scan is not what these tests test.
    cfg = dataclasses.replace(ClamavConfig(enabled=True, address=address, timeout=15.0), **overrides)
    deps = FilterDeps(resolver=dns.asyncresolver.Resolver(configure=False), hostname="mx.postroom.test")
    return build(cfg, deps)


def scan(flt: ClamavFilter, message: bytes) -> tuple[Decision | None, Transaction]:
    conn = Connection(session_id="s1", peer_ip="127.0.0.10")
    txn = Transaction(queue_id="Q1", mail_from="a@example.org", rcpt_to=["help@acme.helpdesk.test"])
    txn.message = message
    decision = asyncio.run(FilterChain([ChainLink(flt, flt.cfg)]).run(Stage.DATA, conn, txn))
    return decision, txn


@pytest.mark.parametrize("transport", ["tcp", "unix"])
def test_eicar_attachment_is_refused_with_its_signature_name(
    clamd_server: ClamdServer, transport: str
) -> None:
    address = clamd_server.tcp_address if transport == "tcp" else clamd_server.unix_address
    decision, txn = scan(make_filter(address), eicar_attachment())
    assert decision is not None
    assert decision.render() == f"554 5.7.1 message rejected: virus found: {EICAR_NAME}"
    assert txn.facts["clamav"]["virus"] == {"found": True, "name": EICAR_NAME}
    assert txn.verdicts[0].action == "reject"


def test_clean_message_passes_and_records_no_virus(clamd_server: ClamdServer) -> None:
    decision, txn = scan(make_filter(clamd_server.unix_address), CLEAN)
    assert decision is None
    assert txn.facts["clamav"]["virus"] == {"found": False, "name": None}
    assert (txn.verdicts[0].result, txn.verdicts[0].action) == ("pass", "accept")


def test_message_spanning_many_chunks_is_scanned_whole(clamd_server: ClamdServer) -> None:
    # The marker sits across a chunk boundary, so it is only found if chunks are sent intact and in order.
    message = CLEAN + b"x" * (4096 - len(CLEAN) - 10) + MARKER + b"y" * 20_000
    decision, txn = scan(make_filter(clamd_server.tcp_address, chunk_size=4096), message)
    assert decision is not None
    assert txn.facts["clamav"]["virus"]["name"] == MARKER_NAME


def test_message_of_exactly_stream_max_length_is_scanned(clamd_server: ClamdServer) -> None:
    message = EICAR + b" " * (STREAM_MAX_LENGTH - len(EICAR))
    flt = make_filter(clamd_server.tcp_address, stream_max_length=STREAM_MAX_LENGTH)
    decision, _ = scan(flt, message)
    assert decision is not None and decision.reason == "virus.found"


@pytest.mark.parametrize(
    ("oversize", "reply"),
    [
        ("reject", "552 5.3.4 message too large for virus scanning"),
        ("tempfail", "451 4.3.4 message too large for virus scanning, try again later"),
    ],
)
def test_oversize_message_is_refused_when_configured(
    clamd_server: ClamdServer, oversize: str, reply: str
) -> None:
    flt = make_filter(clamd_server.tcp_address, stream_max_length=STREAM_MAX_LENGTH, oversize=oversize)
    decision, txn = scan(flt, EICAR + b" " * STREAM_MAX_LENGTH)
    assert decision is not None
    assert decision.render().startswith(reply + ": message of ")
    assert txn.facts["clamav"]["virus"] == {"found": False, "name": None, "scanned": False}


def test_oversize_message_is_accepted_unscanned_and_flagged_by_default(clamd_server: ClamdServer) -> None:
    flt = make_filter(clamd_server.tcp_address, stream_max_length=STREAM_MAX_LENGTH)
    decision, txn = scan(flt, EICAR + b" " * STREAM_MAX_LENGTH)
    assert decision is None
    assert txn.verdicts[0].result == "skip"
    assert "accepted unscanned" in txn.verdicts[0].detail
    assert txn.facts["clamav"]["virus"]["scanned"] is False


def test_clamd_stream_limit_error_is_a_temporary_failure(clamd_server: ClamdServer) -> None:
    # The filter believes clamd takes more than it does: clamd's own ERROR reply must not become a pass.
    flt = make_filter(clamd_server.tcp_address, stream_max_length=4 * STREAM_MAX_LENGTH)
    decision, txn = scan(flt, CLEAN + b" " * (2 * STREAM_MAX_LENGTH))
    assert decision is not None
    assert decision.render().startswith("451 4.7.1 ")
    assert txn.verdicts[0].reason == "clamav.error"
    # clamd answers "size limit exceeded" and closes; when that close races our last write, the kernel's
    # reset can drop the answer, and the client says so.
    assert "size limit" in txn.verdicts[0].detail


def test_clamd_down_gives_451(clamd_killable: ClamdServer) -> None:
    flt = make_filter(clamd_killable.unix_address)
    clamd_killable.kill()
    decision, txn = scan(flt, eicar_attachment())
    assert decision is not None
    assert decision.render().startswith("451 4.7.1 temporary failure in message checks")
    assert txn.verdicts[0].reason == "clamav.unavailable"


def test_clamd_down_with_fail_open_accepts_and_flags_the_verdict(clamd_killable: ClamdServer) -> None:
    flt = make_filter(clamd_killable.tcp_address, fail_open=True)
    clamd_killable.kill()
    decision, txn = scan(flt, CLEAN)
    assert decision is None
    verdict = txn.verdicts[0]
    assert (verdict.result, verdict.failed_open, verdict.reason) == ("temperror", True, "clamav.unavailable")


def test_hung_clamd_times_out_with_451(clamd_killable: ClamdServer) -> None:
    flt = make_filter(clamd_killable.tcp_address, timeout=0.5)
    clamd_killable.freeze()
    try:
        decision, txn = scan(flt, CLEAN)
    finally:
        clamd_killable.thaw()
    assert decision is not None and decision.reply.code == 451
    assert txn.verdicts[0].reason == "clamav.timeout"


def test_clamd_killed_during_traffic_never_lets_a_virus_through(clamd_killable: ClamdServer) -> None:
    flt = make_filter(clamd_killable.tcp_address)
    chain = FilterChain([ChainLink(flt, flt.cfg)])

    async def traffic() -> list[Decision | None]:
        first_scanned = asyncio.Event()

        async def one(i: int) -> Decision | None:
            txn = Transaction(queue_id=f"Q{i}", message=eicar_attachment())
            decision = await chain.run(Stage.DATA, Connection(session_id=f"s{i}", peer_ip="127.0.0.10"), txn)
            if decision is not None and decision.reply.code == 554:
                first_scanned.set()
            return decision

        # Kill clamd as soon as one scan has completed, with the rest of the burst still in flight.
        burst = [asyncio.create_task(one(i)) for i in range(40)]
        await asyncio.wait_for(first_scanned.wait(), timeout=10)
        await asyncio.to_thread(clamd_killable.kill)
        after = [asyncio.create_task(one(100 + i)) for i in range(10)]
        return list(await asyncio.gather(*burst, *after))

    codes = [d.reply.code if d else None for d in asyncio.run(traffic())]
    assert None not in codes  # every message was refused: scanned (554) or deferred (451)
    assert set(codes) == {554, 451}
    assert codes[-10:] == [451] * 10


def test_observe_mode_records_the_virus_but_does_not_refuse(clamd_server: ClamdServer) -> None:
    decision, txn = scan(make_filter(clamd_server.tcp_address, mode=Mode.OBSERVE), eicar_attachment())
    assert decision is None
    assert txn.verdicts[0].action == "observe:reject"
    assert txn.facts["clamav"]["virus"]["found"] is True


@pytest.mark.parametrize("address", ["clamd.ctl", "unix:relative.sock", "127.0.0.1:99999"])
def test_bad_address_is_a_config_error_naming_the_key(address: str) -> None:
    with pytest.raises(ConfigError, match=r"^filters\.clamav\.address: "):
        make_filter(address)


def test_reply_parsing() -> None:
    assert parse_reply("stream: OK") == ScanResult(found=False)
    assert parse_reply("stream: Win.Test.X FOUND") == ScanResult(found=True, signature="Win.Test.X")
    with pytest.raises(ClamdError, match="size limit"):
        parse_reply("INSTREAM size limit exceeded. ERROR")
    with pytest.raises(ClamdError, match="unexpected"):
        parse_reply("PONG")


@pytest.mark.parametrize("size", [0, 1, 4095, 4096, 4097, 3 * 4096])
def test_instream_framing_on_the_wire(size: int) -> None:
    """zINSTREAM, length-prefixed chunks of at most chunk_size, a zero-length chunk: byte for byte."""
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]

    async def exchange() -> bytes:
        received = bytearray()
        done = asyncio.Event()

        async def fake_clamd(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            received.extend(await reader.readexactly(len(b"zINSTREAM\0")))
            while True:  # read by the protocol's own framing, up to the zero-length chunk
                prefix = await reader.readexactly(4)
                (length,) = struct.unpack(">I", prefix)
                received.extend(prefix + await reader.readexactly(length))
                if length == 0:
                    break
            writer.write(b"stream: OK\0")
            await writer.drain()
            writer.close()
            done.set()

        server = await asyncio.start_server(fake_clamd, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            client = ClamdClient(ClamdAddress(host="127.0.0.1", port=port), chunk_size=4096)
            assert await client.instream(data) == ScanResult(found=False)
            await asyncio.wait_for(done.wait(), 5)
        return bytes(received)

    expected = b"zINSTREAM\0"
    for start in range(0, size, 4096):
        chunk = data[start : start + 4096]
        expected += struct.pack(">I", len(chunk)) + chunk
    expected += struct.pack(">I", 0)
    assert asyncio.run(asyncio.wait_for(exchange(), 10)) == expected


def test_a_reset_mid_stream_is_clamds_refusal_not_an_outage() -> None:
    """clamd closing on its size limit while we still write can reach us as a reset, reply lost."""

    async def run() -> str:
        async def reset_early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(16)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = RST
            writer.close()

        server = await asyncio.start_server(reset_early, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            client = ClamdClient(ClamdAddress(host="127.0.0.1", port=port), chunk_size=4096)
            with pytest.raises(ClamdError) as caught:
                await asyncio.wait_for(client.instream(b"x" * 4_000_000), timeout=10)
            return str(caught.value)
        finally:
            server.close()
            await server.wait_closed()

    assert "clamd" in asyncio.run(run())
