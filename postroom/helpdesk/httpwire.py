"""The minimal HTTP/1.1 server-side wire format the test receiver needs: read one request, render a response.

Only what a webhook endpoint sees: a request line, headers, a Content-Length body; keep-alive by default on
HTTP/1.1. Anything else is refused with a clear status rather than guessed at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from http import HTTPStatus

# The stream reader's limit: readuntil() gives up on a head longer than this.
MAX_HEAD_BYTES = 64 * 1024


class BadRequest(Exception):
    """A request the receiver will not process; answered with `status`, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    version: str
    headers: Mapping[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes

    @property
    def keep_alive(self) -> bool:
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


async def read_request(reader: asyncio.StreamReader, *, max_body_bytes: int) -> Request | None:
    """The next request on the connection, or None when the client closed it cleanly between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise BadRequest(400, "truncated request head") from None
    except asyncio.LimitOverrunError:
        raise BadRequest(431, "request head too large") from None
    method, path, version, headers = _parse_head(head)
    if "transfer-encoding" in headers:
        raise BadRequest(501, "chunked request bodies are not supported; send Content-Length")
    length_value = headers.get("content-length", "0")
    if not (length_value.isascii() and length_value.isdigit()):
        raise BadRequest(400, "invalid Content-Length")
    length = int(length_value)
    if length > max_body_bytes:
        raise BadRequest(413, f"body larger than {max_body_bytes} bytes")
    body = await reader.readexactly(length) if length else b""
    return Request(method, path, version, headers, body)


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    text = head.decode("latin-1")
    request_line, *lines = text[:-4].split("\r\n")
    parts = request_line.split(" ")
    if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest(400, "malformed header line")
        key = name.lower()
        value = value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return parts[0], parts[1], parts[2], headers


def render_response(status: int, body: bytes, headers: Mapping[str, str], *, keep_alive: bool) -> bytes:
    """Status line, headers and body as bytes; Content-Length and Connection are always set here."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Status"
    lines = [f"HTTP/1.1 {status} {phrase}"]
    own = {"content-length", "connection"}
    if "content-type" not in {name.lower() for name in headers}:
        lines.append("Content-Type: application/json")
    lines.extend(f"{name}: {value}" for name, value in headers.items() if name.lower() not in own)
    lines.append(f"Content-Length: {len(body)}")
    lines.append(f"Connection: {'keep-alive' if keep_alive else 'close'}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
