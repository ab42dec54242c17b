"""The rule grammar: which segment, what to do with it (pure).

Both the proxy (which applies rules) and the lab (which checks the rules of
a scenario file or a command line before anything starts) use this module,
so a rule means the same everywhere.  :mod:`proxy.rules` applies them.

A rule names segments by role and says what happens to them::

    drop    syn-ack@1            the first SYN-ACK of every connection
    delay   client:fin@1=2s      the client's first FIN, by 2 s
    hold    server:fin@1         the server's first FIN, until released
    duplicate data@2             the second data segment, sent twice
    reset   data@1#2             the first data segment of connection 2:
                                 dropped, and an in-window RST sent to both ends

On a command line: ``--ACTION [client:|server:]TAG[@N[,N…]][#CONN][=DURATION]``
(:func:`parse_cli`); in a scenario file, one TOML table per rule
(:func:`parse_table`).  ``--pace DURATION`` (:func:`parse_pace`) delays every
segment.  The tags are :data:`TAGS`, the roles :mod:`proxy.flows` gives each
segment, and ``any``.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from typing import Any, Literal

from core.units import format_duration, parse_duration

TAGS: tuple[str, ...] = (
    "syn",
    "syn-ack",
    "handshake-ack",
    "data",
    "ack",
    "fin",
    "fin-ack",
    "last-ack",
    "rst",
    "retransmit",
)
"""The roles :mod:`proxy.flows` gives a segment, in the order a segment's
tags are listed."""
ANY = "any"
ACTIONS: tuple[str, ...] = ("drop", "delay", "duplicate", "reset", "hold")
Action = Literal["drop", "delay", "duplicate", "reset", "hold"]
Side = Literal["client", "server"]
MAX_DELAY = 3600.0
"""Longest delay or pace accepted (1 h): anything longer is surely a typo."""


class RuleError(ValueError):
    """A rule that cannot be understood: which one, and why."""


@dataclasses.dataclass(frozen=True, slots=True)
class Match:
    tag: str | None = None
    """None: every segment."""
    from_: Side | None = None
    nth: frozenset[int] | None = None
    """Occurrences (1-based, per connection) that fire; None: all."""
    conn: int | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    name: str
    match: Match
    action: Action
    delay: float | None = None


# --- parsing ---------------------------------------------------------------------

MAX_COUNT = 1_000_000
"""Largest occurrence (``@N``) or connection number (``#N``) a rule may name."""
MAX_NTH = 64
"""Most occurrences one rule may list (``@1,3,5…``)."""
MAX_RULE_TEXT = 256

_CLI = re.compile(
    r"""^(?:(?P<side>client|server):)?
        (?P<tag>[a-z-]{1,32})
        (?:@(?P<nth>[0-9]{1,7}(?:,[0-9]{1,7}){0,63}))?
        (?:\#(?P<conn>[0-9]{1,7}))?
        (?:=(?P<delay>.{1,64}))?$""",
    re.VERBOSE,
)


def _check_tag(tag: str, where: str) -> str | None:
    if tag == ANY:
        return None
    if tag not in TAGS:
        close = difflib.get_close_matches(tag, TAGS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RuleError(f"{where}: unknown tag {tag!r}{hint}; tags are {', '.join(TAGS)}, any")
    return tag


def _check_delay(text: str, where: str) -> float:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise RuleError(f"{where}: {exc}") from None
    if value > MAX_DELAY:
        raise RuleError(f"{where}: {text} is longer than {MAX_DELAY:g}s")
    return value


def auto_name(action: str, match: Match) -> str:
    return f"{action}-{_spec(match)}"


def _spec(match: Match) -> str:
    text = ""
    if match.from_:
        text += f"{match.from_}:"
    text += match.tag or ANY
    if match.nth:
        text += "@" + ",".join(str(n) for n in sorted(match.nth))
    if match.conn is not None:
        text += f"#{match.conn}"
    return text


def parse_cli(action: str, text: str) -> Rule:
    """``--drop syn-ack@1``, ``--delay client:fin@1=2s``… → a rule."""
    if len(text) > MAX_RULE_TEXT:
        raise RuleError(f"--{action} {text[:40]}…: a rule is at most {MAX_RULE_TEXT} characters")
    where = f"--{action} {text}"
    if action not in ACTIONS:
        raise RuleError(f"{where}: unknown action {action!r} ({', '.join(ACTIONS)})")
    m = _CLI.match(text.strip())
    if m is None:
        raise RuleError(
            f"{where}: expected [client:|server:]TAG[@N[,N...]][#CONN]"
            + ("=DURATION" if action == "delay" else "")
            + ", e.g. syn-ack@1"
        )
    tag = _check_tag(m["tag"], where)
    nth = None
    if m["nth"]:
        numbers = [int(n) for n in m["nth"].split(",")]
        if any(not 1 <= n <= MAX_COUNT for n in numbers):
            raise RuleError(f"{where}: nth must be 1 to {MAX_COUNT} (the first occurrence is @1)")
        nth = frozenset(numbers)
    conn = int(m["conn"]) if m["conn"] else None
    if conn is not None and not 1 <= conn <= MAX_COUNT:
        raise RuleError(f"{where}: connection numbers run from 1 to {MAX_COUNT}")
    delay = None
    if action == "delay":
        if m["delay"] is None:
            raise RuleError(f"{where}: a delay needs a duration, e.g. {m['tag']}@1=2s")
        delay = _check_delay(m["delay"], where)
    elif m["delay"] is not None:
        raise RuleError(f"{where}: only a delay takes '=DURATION'")
    match = Match(tag, m["side"], nth, conn)  # type: ignore[arg-type]
    return Rule(auto_name(action, match), match, action, delay)  # type: ignore[arg-type]


def format_rule(rule: Rule) -> str:
    """The compact form again: ``client:fin@1=2s`` (without the action)."""
    text = _spec(rule.match)
    if rule.action == "delay" and rule.delay is not None:
        text += f"={format_duration(rule.delay)}"
    return text


_TABLE_KEYS = ("action", "tag", "from", "nth", "conn", "delay", "name")


def parse_table(table: Mapping[str, Any], where: str) -> Rule:
    """One rule from a TOML table; ``where`` (file and position) starts every error."""
    unknown = sorted(set(table) - set(_TABLE_KEYS))
    if unknown:
        raise RuleError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(_TABLE_KEYS)})")
    action = table.get("action")
    if action not in ACTIONS:
        raise RuleError(f"{where}: 'action' must be one of {', '.join(ACTIONS)}, not {action!r}")
    tag_value = table.get("tag", ANY)
    if not isinstance(tag_value, str):
        raise RuleError(f"{where}: 'tag' must be a string")
    tag = _check_tag(tag_value, where)
    side = table.get("from")
    if side is not None and side not in ("client", "server"):
        raise RuleError(f'{where}: \'from\' must be "client" or "server", not {side!r}')
    nth_value = table.get("nth")
    nth: frozenset[int] | None = None
    if nth_value is not None:
        numbers = [nth_value] if not isinstance(nth_value, list) else nth_value
        if not numbers or not all(isinstance(n, int) and not isinstance(n, bool) for n in numbers):
            raise RuleError(f"{where}: 'nth' must be a number or a list of numbers")
        if len(numbers) > MAX_NTH:
            raise RuleError(f"{where}: 'nth' lists at most {MAX_NTH} occurrences")
        if any(not 1 <= n <= MAX_COUNT for n in numbers):
            raise RuleError(f"{where}: 'nth' must be 1 to {MAX_COUNT} (the first occurrence is 1)")
        nth = frozenset(numbers)
    conn = table.get("conn")
    if conn is not None and (
        not isinstance(conn, int) or isinstance(conn, bool) or not 1 <= conn <= MAX_COUNT
    ):
        raise RuleError(f"{where}: 'conn' must be a connection number, 1 to {MAX_COUNT}")
    delay = None
    if action == "delay":
        if not isinstance(table.get("delay"), str):
            raise RuleError(f'{where}: a delay rule needs delay = "DURATION", e.g. "2s"')
        delay = _check_delay(table["delay"], where)
    elif "delay" in table:
        raise RuleError(f"{where}: only a delay rule takes 'delay'")
    match = Match(tag, side, nth, conn)
    name = table.get("name")
    if name is not None and (
        not isinstance(name, str) or not name.strip() or len(name) > 64 or not name.isprintable()
    ):
        raise RuleError(f"{where}: 'name' must be a printable string of 1 to 64 characters")
    return Rule(name or auto_name(action, match), match, action, delay)


def parse_pace(text: str) -> float:
    """``--pace 250ms``: the same bounds as a delay's."""
    return _check_delay(text, f"--pace {text}")
