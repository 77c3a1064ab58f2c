"""The operations HTTP endpoint on `[metrics] listen`: /metrics, /healthz and /readyz.

A deliberately tiny HTTP/1.1 server on asyncio streams (one request per connection, GET and HEAD only): it
needs no framework, runs on the pipeline's own event loop — so /healthz answering proves that loop is alive
— and bounds every request in size and time. Bind it to loopback or a private network: it has no auth.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from http import HTTPStatus

import orjson

from postroom.app.readiness import CheckResult, ReadinessCheck
from postroom.core.metrics import Renders

log = logging.getLogger("postroom.ops")

MAX_REQUEST_HEAD = 8192
REQUEST_TIMEOUT = 5.0


def parse_listen(listen: str) -> tuple[str, int]:
    """'127.0.0.1:9100' or '[::1]:9100'; port 0 picks a free port (tests)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {listen!r}")
    return host.strip("[]"), int(port)


class OpsServer:
    def __init__(
        self,
        listen: str,
        metrics: Renders,
        checks: Sequence[ReadinessCheck] = (),
        *,
        check_timeout: float = 3.0,
    ) -> None:
        self.host, self._port = parse_listen(listen)
        self.metrics = metrics
        self.checks = list(checks)
        self.check_timeout = check_timeout
        self.draining = False
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The bound port (the real one when `listen` asked for port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    def add_check(self, check: ReadinessCheck) -> None:
        self.checks.append(check)

    def set_draining(self) -> None:
        """On shutdown: /readyz answers 503 so the balancer stops sending new sessions here."""
        self.draining = True

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self._port, limit=MAX_REQUEST_HEAD)
        log.info(
            "ops endpoint listening", extra={"event": "ops_listen", "listen": f"{self.host}:{self.port}"}
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    # ---- request handling ---------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            method, path, headers = _parse_head(head)
            if method not in ("GET", "HEAD"):
                status, ctype, body = HTTPStatus.METHOD_NOT_ALLOWED, "text/plain", b"method not allowed\n"
            else:
                status, ctype, body = await self._route(path, headers)
            _respond(writer, status, ctype, body, head_only=method == "HEAD")
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            _respond(writer, HTTPStatus.BAD_REQUEST, "text/plain", b"bad request\n")
        except ConnectionError:
            pass
        except Exception:  # answer 500 and keep serving: the endpoint must outlive a bug in one route
            log.exception("ops request failed")
            _respond(writer, HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain", b"internal error\n")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _route(self, path: str, headers: dict[str, str]) -> tuple[HTTPStatus, str, bytes]:
        if path == "/metrics":
            # Rendering lists spool directories: keep that disk I/O off the event loop.
            body, ctype = await asyncio.to_thread(self.metrics.render, headers.get("accept"))
            return HTTPStatus.OK, ctype, body
        if path == "/healthz":
            return HTTPStatus.OK, "text/plain; charset=utf-8", b"ok\n"
        if path == "/readyz":
            results = await self.readiness()
            failed = [name for name, ok, _ in results if not ok]
            body = orjson.dumps(
                {
                    "ready": not failed,
                    "failed": failed,
                    "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in results],
                }
            )
            status = HTTPStatus.SERVICE_UNAVAILABLE if failed else HTTPStatus.OK
            return status, "application/json", body + b"\n"
        return HTTPStatus.NOT_FOUND, "text/plain", b"not found\n"

    async def readiness(self) -> list[CheckResult]:
        """Run every check concurrently; a timeout or exception is a failure, never a crash."""
        results = await asyncio.gather(
            *(self._run_check(i, check) for i, check in enumerate(self.checks)),
        )
        if self.draining:
            results.append(("draining", False, "shutting down"))
        return results

    async def _run_check(self, index: int, check: ReadinessCheck) -> CheckResult:
        try:
            return await asyncio.wait_for(check(), self.check_timeout)
        except TimeoutError:
            return f"check[{index}]", False, f"no answer within {self.check_timeout:g}s"
        except Exception as exc:  # a broken check must make the node unready, not break the endpoint
            log.exception("readiness check raised")
            return f"check[{index}]", False, f"{type(exc).__name__}: {exc}"


def _parse_head(head: bytes) -> tuple[str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError("unsupported HTTP version")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return method, target.split("?", 1)[0], headers


def _respond(
    writer: asyncio.StreamWriter, status: HTTPStatus, ctype: str, body: bytes, *, head_only: bool = False
) -> None:
    head = (
        f"HTTP/1.1 {status.value} {status.phrase}\r\n"
        f"Content-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + (b"" if head_only else body))
