"""A minimal TOML writer for test configs (tables of scalars and lists, lists of
inline tables; nested tables by dotted names)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):  # only inside a list (an array of inline tables, e.g. submission users)
        return "{" + ", ".join(f"{key} = {_value(v)}" for key, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dumps(data: dict[str, Any], prefix: str = "") -> str:
    scalars = [f"{key} = {_value(v)}" for key, v in data.items() if not isinstance(v, dict)]
    out = []
    if scalars:
        if prefix:
            out.append(f"[{prefix}]")
        out.extend(scalars)
        out.append("")
    for key, value in data.items():
        if isinstance(value, dict):
            out.append(dumps(value, f"{prefix}.{key}" if prefix else key))
    return "\n".join(out)


def write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(dumps(data))
    return path
