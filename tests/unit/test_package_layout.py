"""The package layout: modules sit in their stage's package, packages import each other without
cycles, the README and the package docstring list every package, and a Kafka-only command does
not load the Snowflake connector."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

import loader

pytestmark = pytest.mark.unit

ROOT = Path(loader.__file__).parent
README = ROOT.parent / "README.md"
CROSS_CUTTING = {"__init__", "__main__", "errors", "logs", "metrics", "retry"}
"""The only modules allowed loose in ``loader/``: every stage uses them."""


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _unit(module: str) -> str:
    """The package (or loose module) of ``loader`` that ``module`` belongs to."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def _packages() -> list[str]:
    return sorted(p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file())


def _imports(path: Path) -> set[str]:
    """The ``loader`` modules a file imports, wherever the import statement is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "loader" or name.startswith("loader.")}


def _package_graph() -> dict[str, set[str]]:
    """Package → the other packages (or loose modules) it imports."""
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        source = _unit(_module_name(path))
        targets = {_unit(name) for name in _imports(path)} - {source, "loader"}
        graph.setdefault(source, set()).update(targets)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as the path around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_every_module_imports() -> None:
    """Every module of the package imports (no import refers to a module that moved)."""
    for path in sorted(ROOT.rglob("*.py")):
        name = _module_name(path)
        if name != "loader.__main__":  # runs the command when imported
            importlib.import_module(name)


def test_no_loose_modules() -> None:
    """Only the cross-cutting modules sit directly in ``loader/``; the rest live in a package."""
    loose = {path.stem for path in ROOT.glob("*.py")}
    assert loose <= CROSS_CUTTING, sorted(loose - CROSS_CUTTING)


def test_no_import_cycle_between_packages() -> None:
    """No package imports, directly or through others, a package that imports it."""
    assert _cycle(_package_graph()) is None, " -> ".join(_cycle(_package_graph()) or [])


def test_cycle_finder_finds_a_cycle() -> None:
    """The cycle check above can fail: it reports the path around a cycle."""
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_readme_and_docstring_list_every_package() -> None:
    """The README's table has one row per package, and the package docstring names each."""
    rows = re.findall(r"^\| `loader/(\w+)/` \|", README.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert sorted(rows) == _packages()
    listed = set(re.findall(r"^- :mod:`loader\.(\w+)`", loader.__doc__ or "", flags=re.MULTILINE))
    assert sorted(listed) == _packages()


def test_replay_publish_does_not_load_the_snowflake_connector() -> None:
    """``loader replay publish`` reads S3 and writes Kafka: importing it loads no Snowflake code."""
    code = (
        "import sys, loader.replay.publish\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'snowflake')\n"
        "assert not loaded, loaded"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
