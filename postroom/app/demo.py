"""`postroom demo`: Postroom with its embedded defaults, a local demo helpdesk, and one sample email.

A newcomer runs one command and watches a ticket arrive: the listener on 127.0.0.1:2525, the spool in
./var/spool, the demo helpdesk on the webhook URL verifying each signature and printing each ticket.
"""

from __future__ import annotations

import asyncio
import secrets
import smtplib
import sys
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit

from postroom.app.config import Config
from postroom.app.serve import Postroom
from postroom.core.configload import parse_hostport
from postroom.core.secret_policy import PUBLIC_DEFAULTS
from postroom.helpdesk.receiver import TicketReceiver, describe

SAMPLE_RECIPIENT_LOCAL = "support+4711"


def sample_message(recipient: str) -> bytes:
    message = EmailMessage()
    message["From"] = "Ada Lovelace <ada@example.org>"
    message["To"] = recipient
    message["Subject"] = "My printer is on fire"
    message["Message-ID"] = "<demo-1@example.org>"
    message.set_content("Hello,\n\nthe printer on floor 2 is smoking again.\n\nAda\n")
    return bytes(message)


def _send(host: str, port: int, sender: str, recipient: str, raw: bytes) -> str:
    with smtplib.SMTP(host, port, timeout=30) as client:
        client.ehlo("demo.example.org")
        client.sendmail(sender, [recipient], raw)
        code, reply = client.noop()
    return f"{code} {reply.decode(errors='replace')}"


async def run_demo(config: Config | None, *, once: bool) -> int:
    config = config or Config()
    if config.webhook.secret in PUBLIC_DEFAULTS:
        # The demo signs for its own receiver only: a fresh key, never the public default.
        config.webhook.secret = secrets.token_hex(32)
    url = urlsplit(config.webhook.url)
    printed = asyncio.Event()

    def show(payload: dict[str, Any], headers: Mapping[str, str]) -> None:
        print(f"helpdesk received {describe(payload)}", flush=True)
        printed.set()

    receiver = TicketReceiver(
        config.webhook.secret, host=url.hostname or "127.0.0.1", port=url.port or 80, on_ticket=show
    )
    try:
        await receiver.start()
    except OSError as exc:
        print(
            f"postroom: demo helpdesk cannot listen on {config.webhook.url}: {exc.strerror}", file=sys.stderr
        )
        return 1
    app = await Postroom.build(config)
    try:
        await app.start()
    except OSError as exc:
        await receiver.stop()
        print(f"postroom: cannot listen on {config.smtp.listen}: {exc.strerror}", file=sys.stderr)
        return 1
    host, port = parse_hostport(config.smtp.listen, "smtp.listen")
    recipient = f"{SAMPLE_RECIPIENT_LOCAL}@acme.{config.routing.domains[0]}"
    print(f"postroom listening on {host}:{port}; spool in {app.spool.root}", flush=True)
    print(f"sending a sample email to {recipient} ...", flush=True)
    try:
        await asyncio.to_thread(_send, host, port, "ada@example.org", recipient, sample_message(recipient))
        await asyncio.wait_for(printed.wait(), timeout=30)
        if not once:
            print(
                f"try your own: swaks --server {host}:{port} --to you@acme.{config.routing.domains[0]}"
                "  (Ctrl-C to stop)",
                flush=True,
            )
            await asyncio.Event().wait()
    except TimeoutError:
        print("postroom: the sample ticket did not arrive within 30 s", file=sys.stderr)
        return 1
    except (smtplib.SMTPException, OSError) as exc:
        print(f"postroom: sending the sample failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await app.stop()
        await receiver.stop()
    return 0
