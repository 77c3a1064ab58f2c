"""Strict TOML → dataclass loading: every key known, every value of its declared type.

Errors name the full dotted key (``filters.dnsbl.timeout: expected a number, got 'x'``) so an operator
can fix the file without reading code. Supported field types: str, int, float, bool, StrEnum, Literal,
``X | None``, ``list[X]``, ``dict[str, X]`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
import urllib.parse
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem, with the dotted key it concerns."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key


def load_dataclass(cls: type[T], data: Any, key: str = "") -> T:
    """Build `cls` from a mapping, refusing unknown keys and wrong types."""
    if not isinstance(data, dict):
        raise ConfigError(key, f"expected a table, got {_describe(data)}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(_join(key, unknown[0]), f"unknown key (known: {', '.join(sorted(fields))})")
    values: dict[str, Any] = {}
    for name, value in data.items():
        values[name] = _convert(hints[name], value, _join(key, name))
    missing = [
        name
        for name, f in fields.items()
        if name not in values
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(_join(key, missing[0]), "required key is missing")
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as exc:
            raise ConfigError(_join(key, exc.key), str(exc).split(": ", 1)[-1]) from None
    return obj


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        options = [a for a in get_args(tp) if a is not type(None)]
        if value is None and len(options) < len(get_args(tp)):
            return None
        errors = []
        for option in options:
            try:
                return _convert(option, value, key)
            except ConfigError as exc:
                errors.append(str(exc).split(": ", 1)[-1])
        raise ConfigError(key, " or ".join(errors))
    if origin is typing.Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(key, f"expected one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {_describe(value)}")
        return [_convert(item_tp, item, f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        _key_tp, item_tp = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(key, f"expected a table, got {_describe(value)}")
        return {str(k): _convert(item_tp, v, _join(key, str(k))) for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return load_dataclass(tp, value, key)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            names = ", ".join(repr(m.value) for m in tp)
            raise ConfigError(key, f"expected one of {names}, got {value!r}") from None
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {_describe(value)}")
        return value
    if tp is Any:
        return value
    raise ConfigError(key, f"unsupported config type {tp!r}")


def _join(prefix: str, name: str) -> str:
    if not name:
        return prefix
    return f"{prefix}.{name}" if prefix else name


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


MIB = 1024 * 1024


def parse_hostport(value: str, key: str, default_port: int | None = None) -> tuple[str, int]:
    """'127.0.0.1:2525', '[::1]:25' or (with a default port) a bare host."""
    host, sep, port = value.rpartition(":")
    if not sep or (host.count(":") and not host.startswith("[")):
        if default_port is None:
            raise ConfigError(key, f"expected host:port, got {value!r}")
        host, port = value, str(default_port)
    host = host.strip("[]")
    if not host:
        raise ConfigError(key, f"missing host in {value!r}")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(key, f"invalid port in {value!r}")
    return host, int(port)


@dataclasses.dataclass(frozen=True, slots=True)
class HttpUrl:
    """An http:// or https:// URL whose scheme, host and port have been checked."""

    scheme: str  # "http" or "https", lower-case
    host: str  # without the brackets of an IPv6 literal
    port: int  # as written, else the scheme's default
    path: str  # path and query, "/" when empty


_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_http_url(value: str, key: str) -> HttpUrl:
    """An http(s) URL with a host and a port in 1-65535, else a ConfigError naming `key`.

    A prefix check is not enough: "http://" has no host, and a port of 99999 would be taken modulo 65536
    by some clients and so reach another service.
    """
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ConfigError(key, f"must not contain spaces or control characters, got {value!r}")
    try:
        parts = urllib.parse.urlsplit(value)
        scheme = parts.scheme.lower()
        host = parts.hostname or ""
        port_text = parts.netloc.rpartition("]")[2].rpartition("@")[2].partition(":")[2]
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket
        raise ConfigError(key, f"invalid URL {value!r}: {exc}") from None
    if scheme not in _DEFAULT_PORTS:
        raise ConfigError(key, f"must be an http:// or https:// URL, got {value!r}")
    if not host:
        raise ConfigError(key, f"missing host in {value!r}")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise ConfigError(key, f"invalid port in {value!r} (expected 1-65535)")
    port = int(port_text) if port_text else _DEFAULT_PORTS[scheme]
    path = parts.path or "/"
    return HttpUrl(scheme, host, port, f"{path}?{parts.query}" if parts.query else path)
