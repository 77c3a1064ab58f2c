"""deploy/postroom.example.toml is the config reference: it must load, and it must name every key."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path
from typing import Any

from postroom.app.config import Config, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "postroom.example.toml"
# Keys whose entries are open-ended maps or lists of tables; the example shows one entry (or a comment).
OPEN_ENDED = {"outbound.destinations", "dkim.keys", "submission.users"}


def _documented_keys(cls: type[Any], prefix: str = "") -> set[str]:
    keys = set()
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        key = f"{prefix}{field.name}"
        tp = hints[field.name]
        if dataclasses.is_dataclass(tp) and key not in OPEN_ENDED:
            keys |= _documented_keys(tp, f"{key}.")  # type: ignore[arg-type]
        else:
            keys.add(key)
    return keys


def _present_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key not in OPEN_ENDED:
            keys |= _present_keys(value, f"{key}.")
        else:
            keys.add(key)
    return keys


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.outbound.destinations["gmail.com"].concurrency == 5


def test_example_config_sets_every_key_to_its_default() -> None:
    defaults = Config()
    loaded = load_config(EXAMPLE)
    loaded.outbound.destinations = {}  # the one example entry
    assert loaded == defaults


def test_example_config_names_every_key() -> None:
    with open(EXAMPLE, "rb") as fh:
        present = _present_keys(tomllib.load(fh))
    missing = _documented_keys(Config) - present
    assert not missing, f"undocumented keys: {sorted(missing)}"


def test_single_container_config_matches_the_image() -> None:
    """deploy/podman/postroom.toml listens where the image EXPOSEs and spools where it keeps its VOLUME."""
    deploy = EXAMPLE.parent
    config = load_config(deploy / "podman" / "postroom.toml")
    containerfile = (deploy / "Containerfile").read_text()
    exposed = re.search(r"^EXPOSE (\d+) (\d+)$", containerfile, re.M)
    volume = re.search(r'^VOLUME \["([^"]+)"\]$', containerfile, re.M)
    assert exposed is not None and volume is not None
    assert config.smtp.listen == f"0.0.0.0:{exposed[1]}"
    assert config.metrics.listen == f"0.0.0.0:{exposed[2]}"
    assert config.spool.path == volume[1]
    assert f"127.0.0.1:{exposed[2]}/healthz" in containerfile
