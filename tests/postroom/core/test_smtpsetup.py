"""`smtpsetup.init_protocol` leaves a protocol exactly as aiosmtpd's own constructor does."""

from __future__ import annotations

import asyncio
import collections
import ssl
import weakref
from typing import Any

import pytest
from aiosmtpd.smtp import AuthResult, Envelope, Session

from postroom.core import smtpsetup
from postroom.core.smtpserver import PostroomSMTP


class _Handler:
    """Every kind of member aiosmtpd's constructor looks for: hooks, a 5-argument EHLO, a mechanism."""

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: Any
    ) -> Any:
        return responses

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        return "250 OK"

    async def handle_PROXY(self, server: Any, session: Any, envelope: Any, proxy_data: Any) -> bool:
        return True

    async def auth_CRAM__MD5(self, server: Any, args: list[str]) -> AuthResult:
        return AuthResult(success=False)


async def _noop(server: PostroomSMTP) -> None:
    return None


def _comparable(value: Any, protocol: Any, handler: Any) -> Any:
    """A value with this protocol's per-instance objects replaced by what they are."""
    if value is protocol:
        return "<protocol>"
    if value is handler:
        return "<handler>"
    if isinstance(value, weakref.ref):
        return ("weakref", _comparable(value(), protocol, handler))
    if isinstance(value, asyncio.StreamReader):
        return (type(value), value._limit, value._loop)  # type: ignore[attr-defined]
    if isinstance(value, asyncio.Future):
        return ("future", value.done(), value.get_loop())
    if hasattr(value, "__func__") and hasattr(value, "__self__"):
        return ("bound", value.__func__, _comparable(value.__self__, protocol, handler))
    if isinstance(value, dict):
        return {k: _comparable(v, protocol, handler) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_comparable(v, protocol, handler) for v in value)
    if isinstance(value, collections.deque):
        return ("deque", list(value))
    return value


def _state(protocol: PostroomSMTP, handler: Any) -> dict[str, Any]:
    return {k: _comparable(v, protocol, handler) for k, v in vars(protocol).items()}


def _tls() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_NONE
    return context


@pytest.mark.parametrize(
    "options",
    [
        {"hostname": "mx.example", "ident": "Postroom ESMTP", "timeout": 30.0},
        {
            "hostname": "mx.example",
            "ident": "Postroom ESMTP",
            "data_size_limit": 1000,
            "enable_SMTPUTF8": True,
            "decode_data": False,
            "timeout": 30.0,
            "tls_context": _tls(),
            "require_starttls": False,
            "auth_require_tls": True,
            "auth_exclude_mechanism": ["LOGIN"],
            "proxy_protocol_timeout": 5.0,
        },
    ],
)
async def test_the_protocol_is_left_as_aiosmtpds_constructor_leaves_it(
    options: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = _Handler()
    hooks = {"on_connect": _noop, "on_close": lambda server: None, "session_timeout": 60.0}
    assert smtpsetup.supports(options)
    fast = PostroomSMTP(handler, **hooks, **options)
    monkeypatch.setattr(smtpsetup, "supports", lambda options: False)
    reference = PostroomSMTP(handler, **hooks, **options)

    assert _state(fast, handler) == _state(reference, handler)
    assert "CRAM-MD5" in fast._auth_methods  # the handler's mechanism, found as aiosmtpd finds it
    assert ("LOGIN" in fast._auth_methods) == ("auth_exclude_mechanism" not in options)
    assert fast._ehlo_hook_ver == "new"


async def test_options_postroom_does_not_pass_take_aiosmtpds_own_constructor() -> None:
    assert not smtpsetup.supports({"hostname", "authenticator"})
    server = PostroomSMTP(
        _Handler(), on_connect=_noop, on_close=lambda s: None, session_timeout=1.0, command_call_limit=5
    )
    assert server._enforce_call_limit and server._call_limit_default == 5
    assert isinstance(server._stream_reader, asyncio.StreamReader)
