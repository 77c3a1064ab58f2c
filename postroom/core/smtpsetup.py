"""aiosmtpd's `SMTP.__init__`, without its per-connection introspection.

aiosmtpd 1.4.6 builds one protocol object per connection, and its constructor finds the handler's hooks,
its own `smtp_*` commands and the `auth_*` mechanisms with `inspect.getmembers`, `dir` and
`inspect.signature` every time, which took much of the MX's CPU per connection (docs/benchmark.md,
"Per-connection cost"). Those names depend only on the classes, so here they are found
once per (protocol class, handler class) and each connection only binds them to its objects.

`init_protocol` sets exactly the attributes aiosmtpd's constructor sets, to the same values (a test
compares the two objects attribute by attribute, so a new aiosmtpd release that changes them fails it).
It covers the keyword arguments Postroom passes; `supports` says whether a call is among them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiosmtpd import smtp as aiosmtpd_smtp
from aiosmtpd.smtp import DATA_SIZE_DEFAULT, SMTP

# The one version whose constructor this reproduces (pyproject pins it).
AIOSMTPD_VERSION = "1.4.6"

log = logging.getLogger("mail.log")  # aiosmtpd's own logger, for its own warnings

SUPPORTED_OPTIONS = frozenset(
    {
        "data_size_limit",
        "enable_SMTPUTF8",
        "decode_data",
        "hostname",
        "ident",
        "tls_context",
        "require_starttls",
        "timeout",
        "auth_require_tls",
        "auth_exclude_mechanism",
        "proxy_protocol_timeout",
    }
)


@dataclass(frozen=True)
class _Names:
    """What aiosmtpd's constructor finds by introspection, as attribute names to bind per connection."""

    hooks: tuple[tuple[str, str], ...]  # (command, handler attribute)
    commands: tuple[tuple[str, str], ...]  # (command, protocol attribute)
    mechanisms: tuple[tuple[str, str, bool], ...]  # (mechanism, attribute, is the protocol's own)
    ehlo_hook_ver: str | None


_names_cache: dict[tuple[type, type], _Names] = {}


def supports(options: Iterable[str]) -> bool:
    return aiosmtpd_smtp.__version__ == AIOSMTPD_VERSION and set(options) <= SUPPORTED_OPTIONS


def _names(protocol: SMTP, handler: Any) -> _Names:
    """Found with aiosmtpd's own expressions, on this connection's objects, the first time only."""
    key = (type(protocol), type(handler))
    cached = _names_cache.get(key)
    if cached is not None:
        return cached
    mechanisms = [
        (
            getattr(func, "__auth_mechanism_name__", name.replace("auth_", "").replace("__", "-")),
            name,
            obj is protocol,
        )
        for obj in (protocol, handler)
        for name, func in inspect.getmembers(obj)
        if name.startswith("auth_")
    ]
    hooks = tuple((m.replace("handle_", ""), m) for m in dir(handler) if m.startswith("handle_"))
    ehlo_hook_ver = None
    ehlo = dict(hooks).get("EHLO")
    if ehlo is not None:
        params = len(inspect.signature(getattr(handler, ehlo)).parameters)
        if params not in (4, 5):
            raise RuntimeError("Unsupported EHLO Hook")
        ehlo_hook_ver = "old" if params == 4 else "new"
    names = _Names(
        hooks=hooks,
        commands=tuple((m.replace("smtp_", ""), m) for m in dir(protocol) if m.startswith("smtp_")),
        mechanisms=tuple(mechanisms),
        ehlo_hook_ver=ehlo_hook_ver,
    )
    _names_cache[key] = names
    return names


def init_protocol(
    protocol: SMTP,
    handler: Any,
    reader: asyncio.StreamReader,
    *,
    data_size_limit: int | None = DATA_SIZE_DEFAULT,
    enable_SMTPUTF8: bool = False,
    decode_data: bool = False,
    hostname: str | None = None,
    ident: str | None = None,
    tls_context: ssl.SSLContext | None = None,
    require_starttls: bool = False,
    timeout: float = 300,
    auth_require_tls: bool = True,
    auth_exclude_mechanism: Iterable[str] | None = None,
    proxy_protocol_timeout: float | None = None,
) -> None:
    """What `SMTP.__init__` does for these arguments (called from the event loop's thread), with `reader`
    (an `asyncio.StreamReader`, or a subclass, with aiosmtpd's line limit) as the stream reader."""
    p: Any = protocol  # aiosmtpd's private attributes are undeclared
    p.__ident__ = ident or aiosmtpd_smtp.__ident__
    p.loop = asyncio.get_running_loop()
    asyncio.StreamReaderProtocol.__init__(p, reader, client_connected_cb=p._cb_client_connected, loop=p.loop)
    p.event_handler = handler
    p.data_size_limit = data_size_limit
    p.enable_SMTPUTF8 = enable_SMTPUTF8
    p._decode_data = decode_data
    p.command_size_limits.clear()
    p.hostname = hostname or socket.getfqdn()
    p.tls_context = tls_context
    if tls_context:
        if tls_context.verify_mode not in {ssl.CERT_NONE, ssl.CERT_OPTIONAL}:
            log.warning(
                "tls_context.verify_mode not in {CERT_NONE, CERT_OPTIONAL}; "
                "this might cause client connection problems"
            )
        elif tls_context.check_hostname:
            log.warning("tls_context.check_hostname == True; this might cause client connection problems")
    p.require_starttls = tls_context and require_starttls
    p._timeout_duration = timeout
    p._timeout_handle = None
    p._tls_handshake_okay = True
    p._tls_protocol = None
    p._original_transport = None
    p.session = None
    p.envelope = None
    p.transport = None
    p._handler_coroutine = None
    p._auth_require_tls = auth_require_tls
    if proxy_protocol_timeout is not None:
        if proxy_protocol_timeout <= 0:
            raise ValueError("proxy_protocol_timeout must be > 0")
        if proxy_protocol_timeout < 3.0:
            log.warning("proxy_protocol_timeout < 3.0")
    p._proxy_timeout = proxy_protocol_timeout
    p._auth_callback = aiosmtpd_smtp.login_always_fail
    p._authenticator = None
    p._auth_required = False
    names = _names(protocol, handler)
    mechanism = aiosmtpd_smtp._AuthMechAttr
    p._auth_methods = {
        name: mechanism(getattr(protocol if own else handler, attr), own)
        for name, attr, own in names.mechanisms
    }
    for excluded in auth_exclude_mechanism or ():
        p._auth_methods.pop(excluded, None)
    p._handle_hooks = {command: getattr(handler, attr) for command, attr in names.hooks}
    p._ehlo_hook_ver = names.ehlo_hook_ver
    p._smtp_methods = {command: getattr(protocol, attr) for command, attr in names.commands}
    p._enforce_call_limit = False
