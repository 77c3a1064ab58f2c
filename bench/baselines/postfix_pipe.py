"""Baseline (a): the seed's pipe script. Postfix's pipe(8) runs it once per message with the message on stdin.

It parses the MIME message with the standard library, builds a JSON ticket, signs it like Postroom does and
POSTs it to the webhook. Exit codes follow sysexits, which pipe(8) understands: 0 delivered, 75 (EX_TEMPFAIL)
makes Postfix defer and retry, 69 (EX_UNAVAILABLE) bounces. Only the standard library, like the seed's
script, so interpreter start-up is all it pays for.

master.cf: argv=python3 postfix_pipe.py --url URL --secret-file FILE ${queue_id} ${sender} ${recipient}
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import http.client
import json
import sys
import time
import urllib.parse
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses

EX_OK, EX_UNAVAILABLE, EX_TEMPFAIL = 0, 69, 75


def ticket(raw: bytes, queue_id: str, sender: str, recipient: str) -> dict[str, object]:
    msg = BytesParser(policy=policy.default).parsebytes(raw)
    assert isinstance(msg, EmailMessage)
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    attachments = []
    for part in msg.iter_attachments():
        content = part.get_payload(decode=True)
        if not isinstance(content, bytes):
            content = b""
        attachments.append(
            {
                "filename": part.get_filename(),
                "content_type": part.get_content_type(),
                "size": len(content),
                "content": base64.b64encode(content).decode(),
            }
        )
    local, _, domain = recipient.partition("@")
    mailbox, _, mailbox_hash = local.partition("+")
    return {
        "id": queue_id,
        "received_at": time.time(),
        "tenant": domain.split(".")[0],
        "mailbox": mailbox,
        "mailbox_hash": mailbox_hash,
        "envelope": {"mail_from": sender, "rcpt_to": [recipient]},
        "message_id": msg.get("Message-ID"),
        "from": [{"name": n, "email": e} for n, e in getaddresses(msg.get_all("From", []))],
        "to": [{"name": n, "email": e} for n, e in getaddresses(msg.get_all("To", []))],
        "subject": msg.get("Subject"),
        "text": text.get_content() if text is not None else None,
        "html": html.get_content() if html is not None else None,
        "attachments": attachments,
        "headers": [[k, str(v)] for k, v in msg.items()],
        "raw_size": len(raw),
    }


def post(url: str, secret: str, body: bytes, key: str) -> int:
    timestamp = int(time.time())
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=30)
    headers = {
        "Content-Type": "application/json",
        "X-Postroom-Signature": f"t={timestamp},v1={mac}",
        "Idempotency-Key": key,
    }
    try:
        conn.request("POST", parts.path or "/", body, headers)
        return conn.getresponse().status
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret-file", required=True)
    parser.add_argument("queue_id")
    parser.add_argument("sender")
    parser.add_argument("recipient")
    args = parser.parse_args()
    with open(args.secret_file) as fh:
        secret = fh.read().strip()
    body = json.dumps(ticket(sys.stdin.buffer.read(), args.queue_id, args.sender, args.recipient)).encode()
    try:
        status = post(args.url, secret, body, args.queue_id)
    except OSError as exc:
        print(f"webhook unreachable: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    if 200 <= status < 300:
        return EX_OK
    print(f"webhook answered {status}", file=sys.stderr)
    return EX_TEMPFAIL if status >= 500 or status in (408, 429) else EX_UNAVAILABLE


if __name__ == "__main__":
    sys.exit(main())
