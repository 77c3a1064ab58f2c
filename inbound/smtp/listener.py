"""The MX port: binds it and builds one `PostroomSMTP` protocol per connection, with the listener's limits,
around the one `InboundHandler` (inbound/smtp/handler.py) that holds the policy-free hooks."""

from __future__ import annotations

import asyncio
import ssl

from inbound.config import ListenerSettings
from inbound.smtp.handler import InboundHandler
from postroom.core.configload import parse_hostport
from postroom.core.smtpserver import PostroomSMTP


class SmtpListener:
    """Binds the MX port and builds one PostroomSMTP protocol per connection."""

    def __init__(
        self, config: ListenerSettings, handler: InboundHandler, *, tls_context: ssl.SSLContext | None = None
    ):
        self.config = config
        self.handler = handler
        self.tls_context = tls_context
        self._server: asyncio.base_events.Server | None = None

    def _protocol(self) -> PostroomSMTP:
        cfg = self.config.smtp
        return PostroomSMTP(
            self.handler,
            on_connect=self.handler.on_connect,
            on_close=self.handler.on_close,
            session_timeout=cfg.session_timeout,
            hostname=cfg.hostname,
            ident="Postroom ESMTP",
            data_size_limit=cfg.max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            timeout=cfg.command_timeout,
            tls_context=self.tls_context,
            require_starttls=False,
            auth_require_tls=True,
            proxy_protocol_timeout=cfg.proxy_protocol_timeout if cfg.proxy_protocol else None,
            error_limits=cfg.error_limits(),
            offer_auth=False,  # an MX has no accounts
            on_error_limit=self.handler.on_error_limit,
        )

    async def start(self, *, reuse_port: bool = False) -> None:
        host, port = parse_hostport(self.config.smtp.listen, "smtp.listen")
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            host=host,
            port=port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=1024,
        )

    @property
    def port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


def load_tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context
