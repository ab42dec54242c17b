"""The code's shape: modules with one job stay small, and functions stay
readable.  A module over :data:`MAX_MODULE_LINES` or a function over
:data:`MAX_FUNCTION_LINES` fails here, naming it; declarative tables (an
argparse builder, the scenario file's field tables) are the only
functions allowed to be longer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "daemons", "proxy", "tcplab")
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
DECLARATIVE = {
    ("tcplab/cli/parser.py", "build_parser"),
}
"""Functions that are tables written as calls: one ``add_argument`` after
another."""

MODULES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_module_is_small(path: Path) -> None:
    lines = path.read_text().count("\n")
    assert lines <= MAX_MODULE_LINES, f"{_name(path)}: {lines} lines"


@pytest.mark.parametrize("path", MODULES, ids=_name)
def test_functions_are_short(path: Path) -> None:
    tree = ast.parse(path.read_text())
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
        and (_name(path), node.name) not in DECLARATIVE
    ]
    assert not long, f"{_name(path)}: {', '.join(long)}"
