"""A listener process loads only what its config uses: the heavy optional libraries stay out of a worker.

Each worker is its own process; what it imports is paid once per worker (peak RSS with 20,000 messages
spooled must stay under 200 MB with one worker per core). redis-py alone, with the cryptography it loads,
is ~14 MB per process; jsonschema is only for validating tickets in tests and receivers.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

OPTIONAL = ("redis", "jsonschema", "cryptography")


def _loaded_after(statement: str) -> list[str]:
    probe = f"import sys\n{statement}\nprint(' '.join(m for m in {OPTIONAL!r} if m in sys.modules))"
    command = [sys.executable, "-c", probe]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.split()


def test_the_listener_does_not_import_optional_libraries() -> None:
    assert _loaded_after("import postroom.app.serve, postroom.app.cli") == []


def test_the_probe_sees_an_import() -> None:  # the check above can fail
    assert "redis" in _loaded_after("import outbound.suppression, redis.exceptions")


def test_jsonschema_is_a_test_dependency_not_a_runtime_one() -> None:
    project = tomllib.loads((Path(__file__).parents[3] / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("=")[0].strip() for d in project["dependencies"]]
    assert "jsonschema" not in names
    assert any(d.startswith("jsonschema") for d in project["optional-dependencies"]["test"])


def test_the_whole_product_imports_without_jsonschema() -> None:
    """Every runtime module imports with jsonschema made unimportable (as in a production install)."""
    root = Path(__file__).parents[3]
    modules = sorted(
        ".".join(path.relative_to(root).with_suffix("").parts)
        for package in ("postroom", "inbound", "filters", "outbound")
        for path in (root / package).rglob("*.py")
        if path.name != "__init__.py"
    )
    probe = (
        "import sys, importlib\nsys.modules['jsonschema'] = None\n"
        f"for name in {modules!r}:\n    importlib.import_module(name)\n"
    )
    subprocess.run([sys.executable, "-c", probe], cwd=root, timeout=120, check=True)
