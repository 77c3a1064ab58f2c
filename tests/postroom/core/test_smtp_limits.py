"""The per-session error counter behind the listeners' Postfix-style error limits."""

from __future__ import annotations

from postroom.core.replies import TOO_MANY_RECIPIENTS
from postroom.core.smtp_limits import (
    RECIPIENT_OVERSHOOT_LIMIT,
    ErrorCounter,
    ErrorLimits,
    has_forbidden_chars,
)


def test_errors_past_the_soft_limit_are_delayed_and_the_hard_limit_ends_the_session() -> None:
    counter = ErrorCounter(ErrorLimits(hard_error_limit=5, soft_error_limit=2, error_sleep_time=0.5))
    delays = []
    while not counter.exhausted:
        delays.append(counter.error())
    assert delays == [0.0, 0.0, 0.5, 0.5, 0.5]


def test_junk_commands_count_as_errors_only_past_their_limit() -> None:
    counter = ErrorCounter(ErrorLimits(junk_command_limit=3))
    assert [counter.junk_command() for _ in range(5)] == [False, False, False, True, True]


def test_a_delivered_message_clears_the_count() -> None:
    counter = ErrorCounter(ErrorLimits(hard_error_limit=3))
    counter.error()
    counter.error()
    counter.delivered()
    counter.error()
    counter.error()
    assert not counter.exhausted


def test_controls_and_invalid_utf8_are_recognised_and_plain_text_is_not() -> None:
    invalid_utf8 = b"\xff@x.example".decode("utf-8", "surrogateescape")
    for text in (
        "a\0b@x.example",
        "c\r.example",
        "v\n@x",
        "tab\there",
        "del\x7f",
        "nel\x85",
        "ls\u2028",
        invalid_utf8,
    ):
        assert has_forbidden_chars(text), text
    for text in (None, "", "<ada@example.org> SIZE=100", "jöhn@exämple.de", "client.example.org"):
        assert not has_forbidden_chars(text), text


def test_recipients_over_the_limit_are_no_error_until_the_overshoot_limit() -> None:
    counter = ErrorCounter(ErrorLimits(hard_error_limit=3))
    too_many = TOO_MANY_RECIPIENTS.render()
    for _ in range(RECIPIENT_OVERSHOOT_LIMIT):
        assert counter.error(too_many) == 0.0
    assert not counter.exhausted and counter.errors == 0
    for _ in range(3):
        counter.error(too_many)
    assert counter.exhausted
