"""Attacks on a real `postroom serve` (MX and submission listener), each of which must keep failing.

One server for the module, with short timeouts and a small error limit so the whole module stays fast.
Every attack comes from a source address of its own (127.0.0.x): the auto-block one attack earns must not
decide another's outcome. The webhook points at a closed port, so everything accepted stays in the spool
and "no second message" can be counted there.
"""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from outbound.passwords import hash_password
from postroom.core.spool import QUEUE_STATES, Spool
from tests.outbound.submission_fixtures import HELPDESK_PASSWORD, TEST_COST, write_self_signed
from tests.support import tomlwrite
from tests.support.harness import DOMAIN, config_mapping, free_port, serve_process

RCPT = f"support@acme.{DOMAIN}"
COMMAND_TIMEOUT = 1.5
SESSION_TIMEOUT = 4.0
MAX_PER_IP = 3
HARD_LIMIT, SOFT_LIMIT = 20, 10
AUTO_BLOCK = 3


@dataclass
class Server:
    mx: int
    submission: int
    spool: Spool

    def messages(self) -> int:
        """Messages in the spool. Listed in the order messages move (with retries an hour away they only move
        forward), so one moving while we list is seen at least once; the set counts it once."""
        return len({queue_id for state in QUEUE_STATES for queue_id in self.spool.ids(state)})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("abuse")
    tls = write_self_signed(tmp)
    mx, submission = free_port(), free_port()
    mapping = config_mapping(
        tmp / "spool",
        "http://127.0.0.1:9/tickets",
        port=mx,
        smtp={
            "tls_cert": str(tls.cert),
            "tls_key": str(tls.key),
            "command_timeout": COMMAND_TIMEOUT,
            "session_timeout": SESSION_TIMEOUT,
            "max_sessions_per_ip": MAX_PER_IP,
            "hard_error_limit": HARD_LIMIT,
            "soft_error_limit": SOFT_LIMIT,
            "error_sleep_time": 0.02,
        },
        webhook={"retry_initial": 3600.0, "retry_max_interval": 3600.0},
        delivery={"rescan_interval": 30.0},
        filters={"throttle": {"enabled": True, "auto_block_rejects": AUTO_BLOCK}},
        submission={
            "enabled": True,
            "listen": f"127.0.0.1:{submission}",
            "hostname": "submit.mail-out.test",
            "tls_cert": str(tls.cert),
            "tls_key": str(tls.key),
            "users": [
                {
                    "name": "helpdesk",
                    "password_hash": hash_password(HELPDESK_PASSWORD, n=TEST_COST),
                    "sender_domains": ["mail-out.test"],
                }
            ],
        },
    )
    config_path = tomlwrite.write(tmp / "postroom.toml", mapping)
    with serve_process(config_path, mx, tmp / "serve.log"):
        yield Server(mx, submission, Spool(tmp / "spool"))


class Client:
    """SMTP spoken by hand over one socket, so that anything (NULs, bare CRs, pipelining) can be sent."""

    def __init__(self, port: int, source: str, timeout: float = 10.0) -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            ("127.0.0.1", port), timeout=timeout, source_address=(source, 0)
        )
        self.buffer = b""
        self.greeting = self.reply()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(self.buffer)
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def reply(self) -> list[str]:
        """One whole (possibly multi-line) reply."""
        lines = [self.line().decode(errors="replace")]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line().decode(errors="replace"))
        return lines

    def cmd(self, command: str | bytes) -> str:
        """Send one command; the last line of its reply."""
        data = command.encode(errors="surrogateescape") if isinstance(command, str) else command
        self.send(data + b"\r\n")
        return self.reply()[-1]

    def ehlo(self, name: str = "client.example.org") -> list[str]:
        self.send(f"EHLO {name}\r\n".encode())
        return self.reply()

    def starttls(self, extra: bytes = b"") -> None:
        """STARTTLS (with `extra` pipelined behind it in the same write), then the handshake."""
        self.send(b"STARTTLS\r\n" + extra)
        assert self.reply()[-1].startswith("220")
        assert self.buffer == b""  # nothing the server said was pipelined behind its 220
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        self.sock = context.wrap_socket(self.sock)

    def closed_by_server(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self) -> None:
        self.sock.close()


def client(port: int, source: str, timeout: float = 10.0) -> Client:
    c = Client(port, source, timeout)
    assert c.greeting[-1].startswith("220"), c.greeting
    return c


# ---- relay tricks -----------------------------------------------------------------------------------------


RELAY_TRICKS = [
    "victim@other.example",
    f"victim%other.example@acme.{DOMAIN}",
    f'"victim@other.example"@acme.{DOMAIN}',
    f"@acme.{DOMAIN}:victim@other.example",
    f"victim@other.example@acme.{DOMAIN}",
    "victim@[127.0.0.1]",
    "victim@[IPv6:::1]",
    f"victim@acme.{DOMAIN}.other.example",
    f"victim@acme.{DOMAIN}.",
    f"victim@other.example%acme.{DOMAIN}",
    f"victim@evil{DOMAIN}",
    f"victim@{DOMAIN}",
    f"victim@a.b.{DOMAIN}",
]


def test_relay_tricks_never_reach_a_mailbox(server: Server) -> None:
    before = server.messages()
    c = client(server.mx, "127.0.0.21")
    c.ehlo()
    assert c.cmd("MAIL FROM:<ada@example.org>").startswith("250")
    for rcpt in RELAY_TRICKS:
        reply = c.cmd(f"RCPT TO:<{rcpt}>")
        assert reply[0] == "5", (rcpt, reply)
    assert c.cmd("DATA").startswith("503")  # no recipient was accepted
    c.close()
    assert server.messages() == before


# ---- SMTP smuggling ---------------------------------------------------------------------------------------

SMUGGLED = (
    "MAIL FROM:<ceo@bank.example>\r\nRCPT TO:<" + RCPT + ">\r\nDATA\r\nFrom: ceo@bank.example\r\n"
    "Subject: smuggled\r\n\r\nwire the money\r\n"
)


@pytest.mark.parametrize(
    "fake_end", ["\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r.\r\n", "\n.\r", "\r\n.\r", "\r\n\x00.\r\n"]
)
def test_smuggling_variants_never_yield_a_second_message(server: Server, fake_end: str) -> None:
    before = server.messages()
    c = client(server.mx, "127.0.0.22")
    c.ehlo()
    assert c.cmd("MAIL FROM:<ada@example.org>").startswith("250")
    assert c.cmd(f"RCPT TO:<{RCPT}>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    body = f"From: ada@example.org\r\nSubject: hello\r\n\r\nhi{fake_end}{SMUGGLED}"
    c.send(body.encode() + b"\r\n.\r\n")
    first = c.reply()[-1]
    assert c.cmd("NOOP").startswith("250")  # the next reply is NOOP's: nothing else was answered in between
    assert c.cmd("QUIT").startswith("221")
    c.close()
    assert first[0] in "245" and server.messages() - before == (1 if first.startswith("250") else 0)


# ---- STARTTLS command injection and AUTH on the MX ------------------------------------------------------


def test_commands_pipelined_behind_starttls_are_discarded(server: Server) -> None:
    c = client(server.mx, "127.0.0.23")
    c.ehlo()
    c.starttls(b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<" + RCPT.encode() + b">\r\n")
    assert c.ehlo()[0].startswith("250")  # the first reply over TLS is the EHLO's
    assert c.cmd(f"RCPT TO:<{RCPT}>").startswith("503")  # the injected MAIL never happened
    c.close()


def test_the_mx_offers_no_auth_before_or_after_starttls(server: Server) -> None:
    c = client(server.mx, "127.0.0.24")
    assert not [line for line in c.ehlo() if "AUTH" in line]
    c.starttls()
    assert not [line for line in c.ehlo() if "AUTH" in line]
    for attempt in ("AUTH PLAIN AGFkYQBzZWNyZXQ=", "AUTH LOGIN"):
        reply = c.cmd(attempt)
        assert reply.startswith("503 5.5.1"), reply
    c.close()


# ---- control characters in the envelope -------------------------------------------------------------------


def test_nul_and_controls_in_the_envelope_are_refused(server: Server) -> None:
    before = server.messages()
    c = client(server.mx, "127.0.0.25")
    assert c.cmd("EHLO c\0.example").startswith("501 5.5.4")
    assert c.cmd("HELO c\x1b.example").startswith("501 5.5.4")
    c.ehlo()
    assert c.cmd("MAIL FROM:<a\0b@example.org>").startswith("501 5.5.4")
    assert c.cmd("MAIL FROM:<ab@exa\rmple.org>").startswith("501 5.5.4")
    assert c.cmd("MAIL FROM:<ab@example.org>").startswith("250")
    for rcpt in (f"v\0@acme.{DOMAIN}", f"sup\x7fport@acme.{DOMAIN}", f"support@acme.{DOMAIN}\0"):
        assert c.cmd(f"RCPT TO:<{rcpt}>").startswith("501 5.5.4"), rcpt
    assert c.cmd("DATA").startswith("503")
    c.close()
    assert server.messages() == before


# ---- error limits and the auto-block ----------------------------------------------------------------------


def read_until_closed(c: Client) -> list[str]:
    lines = []
    with pytest.raises(EOFError):
        while True:
            lines.append(c.line().decode())
    c.close()
    return lines


def test_mailbox_enumeration_is_cut_off_at_the_hard_error_limit(server: Server) -> None:
    c = client(server.mx, "127.0.0.26")
    c.ehlo()
    # More guesses than the limit, pipelined in one write: none past the limit is even looked at. (A few KB:
    # whatever the server had not read when it closed would turn its FIN into a RST that loses the 421.)
    guesses = "".join(f"RCPT TO:<guess{i}@other.example>\r\n" for i in range(HARD_LIMIT * 3))
    c.send(b"MAIL FROM:<a@example.org>\r\n" + guesses.encode())
    assert c.reply()[-1].startswith("250")
    replies = read_until_closed(c)
    assert [r[:3] for r in replies] == ["550"] * HARD_LIMIT + ["421"], replies
    assert replies[-1].startswith("421 4.7.0")


def test_sessions_closed_at_the_error_limit_earn_the_auto_block(server: Server) -> None:
    source = "127.0.0.27"
    for _ in range(AUTO_BLOCK):  # errors no filter counts (503: RCPT before MAIL): only the closes count
        c = client(server.mx, source)
        c.ehlo()
        c.send(f"RCPT TO:<{RCPT}>\r\n".encode() * HARD_LIMIT * 2)
        assert [r[:3] for r in read_until_closed(c)] == ["503"] * HARD_LIMIT + ["421"]
    # The last close is recorded as the session ends: wait for the block, within bounds.
    deadline = time.monotonic() + 5
    while True:
        greeting = Client(server.mx, source).greeting[-1]
        if greeting.startswith("554") or time.monotonic() > deadline:
            break
    assert greeting.startswith("554 5.7.1"), greeting


def test_junk_commands_beyond_their_limit_count_as_errors(server: Server) -> None:
    c = client(server.mx, "127.0.0.28")
    c.ehlo()
    c.send(b"NOOP\r\n" * (100 + HARD_LIMIT * 2))
    assert [r[:3] for r in read_until_closed(c)] == ["250"] * (100 + HARD_LIMIT) + ["421"]


# ---- slowloris and floods ---------------------------------------------------------------------------------


def test_a_silent_client_is_cut_off_after_the_command_timeout(server: Server) -> None:
    c = client(server.mx, "127.0.0.29")
    c.send(b"EHLO half-a-comm")  # and never the rest
    started = time.monotonic()
    assert c.closed_by_server()
    assert COMMAND_TIMEOUT * 0.8 < time.monotonic() - started < COMMAND_TIMEOUT + 3


def test_a_client_that_keeps_the_session_alive_is_cut_off_at_the_session_limit(server: Server) -> None:
    c = client(server.mx, "127.0.0.30")
    c.ehlo()
    started = time.monotonic()
    reply = ""
    for _ in range(int(SESSION_TIMEOUT / 0.5) + 4):  # a NOOP every 0.5 s: the command timer never fires
        try:
            reply = c.cmd("NOOP")
        except (EOFError, ConnectionResetError):
            break
        if not reply.startswith("250"):
            break
        time.sleep(0.5)  # the client's pace, not a wait for the server
    assert reply.startswith("421 4.4.2"), reply
    assert SESSION_TIMEOUT * 0.8 < time.monotonic() - started < SESSION_TIMEOUT + 2
    c.close()


def test_a_message_trickled_in_is_cut_off(server: Server) -> None:
    before = server.messages()
    c = client(server.mx, "127.0.0.31")
    c.ehlo()
    assert c.cmd("MAIL FROM:<a@example.org>").startswith("250")
    assert c.cmd(f"RCPT TO:<{RCPT}>").startswith("250")
    assert c.cmd("DATA").startswith("354")
    started = time.monotonic()
    c.sock.settimeout(0.2)
    closed = False
    for _ in range(int(SESSION_TIMEOUT * 5) + 10):  # a byte every 0.2 s, never the end of the data
        try:
            c.send(b"x")
            closed = c.sock.recv(100) == b"" or closed
        except TimeoutError:
            continue
        except (ConnectionResetError, BrokenPipeError):
            closed = True
        if closed:
            break
    assert closed and time.monotonic() - started < SESSION_TIMEOUT + 2
    c.close()
    assert server.messages() == before


def test_one_address_gets_only_its_share_of_sessions(server: Server) -> None:
    source = "127.0.0.32"
    held = [client(server.mx, source) for _ in range(MAX_PER_IP)]
    refused = Client(server.mx, source)
    assert refused.greeting[-1].startswith("421 4.7.0"), refused.greeting
    assert refused.closed_by_server()
    assert client(server.mx, "127.0.0.33").greeting[-1].startswith("220")  # others still get in
    for c in [*held, refused]:
        c.close()


# ---- the submission listener ------------------------------------------------------------------------------


def test_submission_relays_nothing_before_auth_and_refuses_controls_after(server: Server) -> None:
    c = client(server.submission, "127.0.0.1")
    c.ehlo()
    assert c.cmd("MAIL FROM:<support@mail-out.test>").startswith("530")  # STARTTLS first
    c.starttls(b"AUTH PLAIN AGhlbHBkZXNrAA==\r\n")
    c.ehlo()
    assert c.cmd("MAIL FROM:<support@mail-out.test>").startswith("530")  # authentication first
    assert c.cmd("RCPT TO:<victim@other.example>")[0] == "5"
    credentials = f"\0helpdesk\0{HELPDESK_PASSWORD}".encode()
    assert c.cmd(b"AUTH PLAIN " + base64.b64encode(credentials)).startswith("235")
    assert c.cmd("MAIL FROM:<support@mail-out.test>").startswith("250")
    for rcpt in ("v\0@other.example", "v@other.example\r", "v@[127.0.0.1]", "v@localhost"):
        reply = c.cmd(f"RCPT TO:<{rcpt}>")
        assert reply[0] == "5", (rcpt, reply)
    c.close()


def test_submission_ends_a_session_of_errors_before_auth(server: Server) -> None:
    c = client(server.submission, "127.0.0.1")
    c.ehlo()
    c.starttls()
    c.ehlo()
    c.send(b"MAIL FROM:<support@mail-out.test>\r\n" * 50)  # 530 each: not authenticated
    codes = [line[:3] for line in read_until_closed(c)]
    assert codes == ["530"] * 20 + ["421"]


def test_invalid_utf8_in_the_envelope_is_refused_at_once_not_at_data(server: Server) -> None:
    c = client(server.mx, "127.0.0.34")
    assert c.cmd(b"EHLO \xffbad.example").startswith("501 5.5.4")
    c.ehlo()
    assert c.cmd(b"MAIL FROM:<\xff\xfe@example.org>").startswith("501 5.5.4")
    assert c.cmd(f"RCPT TO:<{RCPT}>").startswith("503")  # no transaction was started
    c.close()


def test_a_pipelined_recipient_list_over_the_limit_is_no_error(server: Server) -> None:
    """A real MTA pipelines all its recipients and sends the 452-ed ones later: it must not be cut off."""
    c = client(server.mx, "127.0.0.35")
    c.ehlo()
    rcpts = "".join(f"RCPT TO:<agent{i}@acme.{DOMAIN}>\r\n" for i in range(150))
    c.send(b"MAIL FROM:<a@example.org>\r\n" + rcpts.encode())
    codes = [c.line()[:3].decode() for _ in range(151)]
    assert codes == ["250"] * 101 + ["452"] * 50
    assert c.cmd("DATA").startswith("354")
    assert c.cmd(b"Subject: many\r\n\r\nhi\r\n.").startswith("250")
    c.close()
