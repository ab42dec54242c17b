"""The daemons' decisions live in pure modules: no sockets, no event loop, no
clock.  A module here that imports one of those fails, naming it, so the
decisions stay testable without a kernel and without waiting."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

DAEMONS = Path(__file__).resolve().parents[2] / "daemons"
PURE = (
    "closing",
    "dumpdiff",
    "inference",
    "lines",
    "matching",
    "pacing",
    "portless",
    "statemachine",
    "traceevents",
    "tracking",
)
IMPURE = frozenset({"trio", "socket", "pyroute2", "time", "datetime", "select", "selectors"})
"""I/O, the event loop and the clocks: what a pure module is handed, never takes."""


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("name", PURE)
def test_a_pure_module_takes_no_io_and_no_clock(name: str) -> None:
    path = DAEMONS / f"{name}.py"
    assert not _imports(path) & IMPURE, f"daemons/{name}.py imports {_imports(path) & IMPURE}"
    assert ast.get_docstring(ast.parse(path.read_text())), f"daemons/{name}.py: no docstring"


def test_the_io_modules_do_import_what_this_test_looks_for() -> None:
    # the check above would pass vacuously if it could not see imports at all
    assert {"trio", "socket"} <= _imports(DAEMONS / "server.py")
