"""The package layout's rules, read from the code's own import statements (docs/architecture.md).

Layers, bottom up: `postroom.core` (imports nothing of ours) < `filters` < `inbound`, `outbound` (never
each other) < `postroom.app` (the shell: CLI, serve wiring, workers, ops HTTP, demo). `postroom.helpdesk`
(the demo and test helpdesk) stands beside the product and needs only the core. Every import counts,
including those inside functions and under `if TYPE_CHECKING:`; no module-level import cycle is allowed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("postroom", "inbound", "filters", "outbound")

# What each layer may import (itself included).
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "filters": frozenset({"core", "filters"}),
    "inbound": frozenset({"core", "filters", "inbound"}),
    "outbound": frozenset({"core", "filters", "outbound"}),
    "helpdesk": frozenset({"core", "helpdesk"}),
    "app": frozenset({"core", "filters", "inbound", "outbound", "helpdesk", "app"}),
}
# Inside inbound, the stages: smtp and delivery never reach into each other; the ticket is pure.
INBOUND_STAGES: dict[str, frozenset[str]] = {
    "inbound.ticket": frozenset({"inbound.ticket"}),
    "inbound.smtp": frozenset({"inbound.smtp", "inbound.config"}),
    "inbound.delivery": frozenset({"inbound.delivery", "inbound.ticket", "inbound.config"}),
    "inbound.config": frozenset({"inbound.config"}),
}


def layer(module: str) -> str:
    if module.startswith("postroom.core"):
        return "core"
    if module.startswith("postroom.helpdesk"):
        return "helpdesk"
    if module.startswith("postroom"):
        return "app"
    return module.split(".")[0]


def stage(module: str) -> str | None:
    for name in INBOUND_STAGES:
        if module == name or module.startswith(name + "."):
            return name
    return None


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def imports_of(path: Path) -> Iterator[tuple[str, bool]]:
    """(imported module, whether the statement sits at module level) for every import of our packages."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports pkg.mod when mod is a module: count the submodule.
            names = [
                f"{node.module}.{alias.name}"
                if (REPO / node.module.replace(".", "/") / f"{alias.name}.py").exists()
                else node.module
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            if name.split(".")[0] in PACKAGES:
                yield name, id(node) in top_level


def test_no_import_runs_upward_or_sideways() -> None:
    wrong = []
    for path in source_files():
        importer = module_name(path)
        for imported, _ in imports_of(path):
            if layer(imported) not in ALLOWED[layer(importer)]:
                wrong.append(f"{importer} -> {imported}")
            here, there = stage(importer), stage(imported)
            if here is not None and there is not None and there not in INBOUND_STAGES[here]:
                wrong.append(f"{importer} -> {imported}")
    assert wrong == []


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the directed graph, as a path that returns to its start, or None."""
    state: dict[str, int] = {}  # 1 on the stack, 2 finished
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_find_cycle_finds_one_and_only_one() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_module_level_import_cycle() -> None:
    known = {module_name(p) for p in source_files()}
    edges: dict[str, set[str]] = {}
    for path in source_files():
        importer = module_name(path)
        for imported, top_level in imports_of(path):
            if top_level and imported in known and imported != importer:
                edges.setdefault(importer, set()).add(imported)
    assert find_cycle(edges) is None


def test_the_layer_rule_fails_on_an_upward_import(tmp_path: Path) -> None:
    """The check above can fail: an upward import in a file of the core is caught."""
    assert "inbound" not in ALLOWED[layer("postroom.core.spool")]
    assert "outbound" not in ALLOWED[layer("inbound.smtp.handler")]
    assert "inbound" not in ALLOWED[layer("outbound.runner")]
    assert "inbound" not in ALLOWED[layer("filters.chain")]
    assert "inbound.delivery" not in INBOUND_STAGES["inbound.ticket"]


PACKAGES_ALONE = ["postroom.core", "filters", "inbound", "inbound.ticket", "outbound", "postroom.app"]


@pytest.mark.parametrize("package", PACKAGES_ALONE)
def test_each_package_imports_alone(package: str) -> None:
    modules = [
        module_name(p)
        for p in source_files()
        if module_name(p) == package or module_name(p).startswith(package + ".")
    ]
    assert modules
    # One fresh interpreter per package, importing every module of it and nothing else first.
    code = "import importlib, sys\nfor m in sys.argv[1:]:\n    importlib.import_module(m)\n"
    done = subprocess.run(
        [sys.executable, "-c", code, *modules], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
