"""The linear, lenient MIME parameter reader (inbound.ticket.mime_params)."""

from __future__ import annotations

import time

import pytest

from inbound.ticket.mime_params import MAX_PARAMETERS, parse_params


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('text/plain; charset="utf-8"; format=flowed', {"charset": "utf-8", "format": "flowed"}),
        ("Text/HTML ; CHARSET = iso-8859-1", {"charset": "iso-8859-1"}),
        ('a/b; name="x; y.pdf"; z=1', {"name": "x; y.pdf", "z": "1"}),
        ('a/b; name="quo\\"ted"', {"name": 'quo"ted'}),
        ("a/b; filename*=utf-8'en'%E2%82%AC%20rate.pdf", {"filename": "€ rate.pdf"}),
        ("a/b; name*0*=utf-8''%C3%A9t; name*1=e.txt", {"name": "éte.txt"}),
        ("a/b; name*1=b; name*0=a; name*2=c", {"name": "abc"}),
        ("a/b; filename*=undefined''a.pdf", {"filename": "a.pdf"}),
        ("a/b; filename*=idna''%FF.pdf", {"filename": "ÿ.pdf"}),
        ("a/b; filename*=ut\x00f-8''a.pdf", {"filename": "a.pdf"}),
        ("a/b; name*0=a; name*=b", {"name": "a"}),
        ("a/b; name=plain; name*=utf-8''%C3%BC", {"name": "ü"}),  # the extended form wins, as in RFC 2231
        ('a/b; name="unterminated', {"name": "unterminated"}),
        ("a/b;;; =x; novalue; k=v", {"novalue": "", "k": "v"}),
    ],
)
def test_parameters(value: str, expected: dict[str, str]) -> None:
    assert parse_params(value).params == expected


def test_main_value_is_lower_case_and_trimmed() -> None:
    assert parse_params(" Multipart/Mixed ; boundary=x").value == "multipart/mixed"


def test_hundreds_of_thousands_of_parameters_cost_linear_time_and_are_bounded() -> None:
    started = time.process_time()
    params = parse_params("text/plain; charset=utf-8" + "; a=b" * 300_000).params
    assert time.process_time() - started < 0.5
    assert params == {"charset": "utf-8", "a": "b"}
    many = parse_params("x/y" + "".join(f"; p{i}=v" for i in range(MAX_PARAMETERS + 10))).params
    assert len(many) == MAX_PARAMETERS
