"""Fault options shared by ``python -m proxy``, ``tcplab run`` and
``tcplab lab up``: parsed (and refused, naming the bad option) before
anything starts, then passed on to the proxy process as they were given."""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

from core import rules

RULE_ACTIONS = ("drop", "delay", "hold", "duplicate", "reset")


def add_rule_options(parser: argparse.ArgumentParser) -> None:
    """``--drop/--delay/--hold/--duplicate/--reset RULE`` and ``--pace D``
    (shared with ``tcplab run`` and ``tcplab lab up``)."""
    group = parser.add_argument_group(
        "faults (repeatable; TAG[@N[,N]][#CONN], from: client:/server:)"
    )
    group.add_argument("--drop", action="append", default=[], metavar="RULE", help="e.g. syn-ack@1")
    group.add_argument(
        "--delay", action="append", default=[], metavar="RULE=D", help="e.g. client:fin@1=2s"
    )
    group.add_argument(
        "--hold", action="append", default=[], metavar="RULE", help="keep until released"
    )
    group.add_argument("--duplicate", action="append", default=[], metavar="RULE")
    group.add_argument(
        "--reset", action="append", default=[], metavar="RULE", help="answer with RST both ways"
    )
    group.add_argument("--pace", metavar="D", help="delay every segment by D (slow motion)")


def rules_from_args(args: argparse.Namespace) -> tuple[list[rules.Rule], float | None]:
    """The rules the options ask for; RuleError names the bad option."""
    out: list[rules.Rule] = []
    for action in RULE_ACTIONS:
        for text in getattr(args, action):
            out.append(rules.parse_cli(action, text))
    pace = rules.parse_pace(args.pace) if args.pace else None
    return out, pace


def rule_argv(args: argparse.Namespace) -> list[str]:
    """The options again, to pass on to a proxy process."""
    argv: list[str] = []
    for action in RULE_ACTIONS:
        for text in getattr(args, action):
            argv += [f"--{action}", text]
    if args.pace:
        argv += ["--pace", args.pace]
    return argv


def rules_from_file(path: Path) -> list[rules.Rule]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise rules.RuleError(f"{path}: {exc}") from None
    tables = data.get("rules", [])
    if not isinstance(tables, list):
        raise rules.RuleError(f"{path}: 'rules' must be an array of tables ([[rules]])")
    return [rules.parse_table(t, f"{path}: [[rules]] #{i}") for i, t in enumerate(tables, 1)]
