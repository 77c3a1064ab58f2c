"""The private parts of aiosmtpd that Postroom relies on or overrides still have the shape it expects.

pyproject.toml allows aiosmtpd patch releases (>=1.4.6,<1.5). A release that renamed or reshaped one of these
would break the listeners quietly (an override never called, an attribute never read): this fails instead.
Users: postroom/core/smtpserver.py, postroom/core/smtp_guard.py, outbound/submission_protocol.py.
"""

from __future__ import annotations

import asyncio
import inspect

import aiosmtpd
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword, Session

from postroom.core.smtp_guard import GuardedSMTP


def parameters(function: object) -> list[str]:
    return list(inspect.signature(function).parameters)  # type: ignore[arg-type]


def test_the_release_is_one_postroom_allows() -> None:
    major, minor, patch = (int(part) for part in aiosmtpd.__version__.split(".")[:3])
    assert (major, minor) == (1, 4) and patch >= 6


def test_overridden_and_called_methods_keep_their_signatures() -> None:
    expected = {
        "_getaddr": ["self", "arg"],
        "_handle_client": ["self"],
        "_create_session": ["self"],
        "_call_handler_hook": ["self", "command", "args"],
        "_set_post_data_state": ["self"],
        "check_helo_needed": ["self", "helo"],
        "check_auth_needed": ["self", "caller_method"],
        "push": ["self", "status"],
        "auth_PLAIN": ["self", "_", "args"],
        "auth_LOGIN": ["self", "_", "args"],
        "smtp_DATA": ["self", "arg"],
    }
    for command in ("HELO", "EHLO"):
        expected[f"smtp_{command}"] = ["self", "hostname"]
    for command in ("MAIL", "RCPT", "AUTH", "NOOP", "RSET", "VRFY", "EXPN", "HELP"):
        expected[f"smtp_{command}"] = ["self", "arg"]
    actual = {name: parameters(getattr(SMTP, name)) for name in expected}
    assert actual == expected
    coroutines = [
        name for name in expected if name.startswith(("smtp_", "auth_", "check_", "_handle", "push"))
    ]
    assert all(inspect.iscoroutinefunction(getattr(SMTP, name)) for name in coroutines)


def test_the_authenticator_callback_and_auth_result_are_called_as_the_submission_listener_expects() -> None:
    # SubmissionSMTP's authenticator hands credentials back through AuthResult(auth_data=...).
    source = inspect.getsource(SMTP._authenticate)
    assert (
        "self._authenticator(\n                self, self.session, self.envelope, mechanism, auth_data"
        in source
    )
    assert {"success", "handled", "message", "auth_data"} <= set(parameters(AuthResult))
    assert LoginPassword._fields == ("login", "password")
    session = Session(asyncio.new_event_loop())
    assert session._login_data is None  # _QuietSession's login_data property stores it there
    session.loop.close()


def test_instance_attributes_postroom_reads_exist() -> None:
    class Handler:
        pass

    async def build() -> None:
        server = GuardedSMTP(Handler(), offer_auth=False)
        # Command dispatch is a table of bound methods built from dir(self): the guards' overrides are in it.
        assert server._smtp_methods["MAIL"].__func__ is GuardedSMTP.smtp_MAIL
        assert server._smtp_methods["AUTH"].__func__ is GuardedSMTP.smtp_AUTH
        assert server._auth_methods == {}  # emptied for the MX (a dict of mechanism -> implementation)
        assert "PLAIN" in SMTP(Handler())._auth_methods
        # smtpserver.py swaps the class of this reader and reads its buffer.
        assert type(server._stream_reader) is asyncio.StreamReader
        assert isinstance(server._stream_reader._buffer, bytearray)  # type: ignore[attr-defined]
        assert server._tls_protocol is None and server._decode_data is False
        assert isinstance(server._handle_hooks, dict)
        # The stream writer replies go through is set when the client connects.
        assert "self._writer = writer" in inspect.getsource(SMTP._cb_client_connected)
        for name in ("local_part_limit", "line_length_limit", "data_size_limit", "enable_SMTPUTF8"):
            assert hasattr(server, name), name

    asyncio.run(build())
