"""Fault rules: which segment, and what the middlebox does to it (sans-IO).

A rule names segments by the role they play in their connection (the tags
:mod:`proxy.flows` gives) and says what happens to them::

    --drop      syn-ack@1           the first SYN-ACK of every connection
    --delay     client:fin@1=2s     the client's first FIN, 2 s late
    --hold      server:fin@1        the server's first FIN, until released
    --duplicate data@2              the second data segment, sent twice
    --reset     data@1#2            the first data segment of connection 2 is
                                    dropped and an in-window RST sent both ways
    --drop      any@5               the fifth segment of every connection

The same rule in a scenario file or a rules file is a TOML table::

    [[proxy.rules]]
    action = "delay"           # drop, delay, duplicate, reset, hold
    tag = "fin"                # a tag, or "any" (omitted: any)
    from = "client"            # "client" or "server" (omitted: either side)
    nth = [1, 2]               # a number or a list (omitted: every occurrence)
    conn = 1                   # connection number (omitted: every connection)
    delay = "2s"               # delay rules only; a unit is required
    name = "slow-fin"          # omitted: made from the rule, e.g. delay-fin@1,2#1

The compact form is ``[client:|server:]TAG[@N[,N...]][#CONN][=DURATION]``.
Tags: ``syn``, ``syn-ack``, ``handshake-ack``, ``data``, ``ack``, ``fin``,
``fin-ack``, ``last-ack``, ``rst``, ``retransmit``, and ``any``.  A segment
can carry several tags (a retransmitted SYN is ``syn`` and ``retransmit``; a
FIN that acknowledges the peer's FIN is ``fin`` and ``fin-ack``), and a rule
matches it through any of them.

Matching and counting, exactly
------------------------------

For each segment the rules are looked at in list order (the order they were
given or added).  A rule *matches* a segment when all of these hold:

* the segment carries the rule's tag (``any``: always);
* it comes from the rule's side (``client:`` / ``from = "client"`` is the
  side that sent the first SYN; omitted: either side);
* it belongs to the rule's connection (``#2`` / ``conn = 2``, the proxy's
  connection number in the order it first saw them; omitted: all).

*Every* rule that matches a segment counts it, whether or not an earlier
rule already decided the segment's fate.  Counts are per connection and per
rule: ``@1`` is the first segment of *each* connection that this rule
matched, ``@2`` the second, and so on (retransmissions included — they carry
their role's tag).  A rule *fires* on a segment it matches when the count is
in its ``nth`` set (``@1,3``: the first and the third); a rule without
``nth`` fires on every segment it matches.  The first rule in list order
that fires decides what happens to the segment; when none fires the segment
passes.

So the rules ``drop fin@1`` and ``delay fin@2=1s`` together drop the first
FIN of each connection and delay the second, as one would expect: both rules
count both FINs, even though only one acts on each.  Two rules that would
fire on the same segment do not both act — the earlier one wins, and the
later one has still counted it.

Counts are kept in a dict the connection owns (``counters`` on the
classified segment), keyed by rule name, so they die with the connection and
memory stays bounded; a new connection on the same ports starts from zero.
A rule added while a connection is open counts that connection's segments
from then on.  A rule that is removed and added again (by the control API)
counts afresh.  Rules without ``nth`` keep no per-connection count.

Actions
-------

``drop``        the segment is not forwarded.
``delay``       forwarded ``delay`` later (a unit is required: ``2s``, ``250ms``).
``duplicate``   forwarded twice, back to back.
``reset``       not forwarded; the middlebox sends an in-window RST to both ends.
``hold``        kept until released through the control API (by rule, or all).

Pace
----

``pace`` (``--pace 250ms``) delays every segment that is forwarded by the
same amount: slow motion, so a person can follow and a poller sees every
state.  It adds to a delay rule's delay (``pace 250ms`` + ``delay 2s`` = the
segment leaves 2.25 s after it arrived), and applies to the RSTs of a reset.
Segments whose send times are equal leave in the order they were decided
(:class:`DelayQueue` breaks ties by arrival), so pacing never reorders.

Why pure
--------

Nothing here reads a clock, sleeps or touches a socket: :meth:`RuleEngine.decide`
is given the segment and ``now`` and answers with a :class:`Verdict` saying
what to do and *when* the frame should leave; the forwarder does the waiting
(with :class:`DelayQueue` and :class:`HoldQueue`, also pure).  So every
timing rule is tested with made-up times, exactly and instantly.  Parsing
TOML text is the caller's job: :func:`parse_table` takes the parsed table.
Durations are read by :func:`tcplab.units.parse_duration` (the lab's one
duration syntax) and kept to the microsecond, so a rule printed by
:func:`format_rule` reads back as the same rule.
"""

from __future__ import annotations

import dataclasses
import difflib
import heapq
import itertools
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal, Protocol, cast

from tcplab.units import format_duration, parse_duration

KNOWN_TAGS: Final[tuple[str, ...]] = (
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
"""The tags :mod:`proxy.flows` gives.  Mirrors ``proxy.flows.TAGS`` (kept as a
copy so this module depends on nothing; a test checks they agree)."""
ANY: Final = "any"
"""The tag that matches every segment (``Match.tag`` is None)."""
ACTIONS: Final[tuple[str, ...]] = ("drop", "delay", "duplicate", "reset", "hold")
Action = Literal["drop", "delay", "duplicate", "reset", "hold"]
VerdictAction = Literal["pass", "drop", "delay", "duplicate", "reset", "hold"]
Side = Literal["client", "server"]
SIDES: Final[tuple[str, ...]] = ("client", "server")
DIRECTION: Final[dict[str, str]] = {"client": "c2s", "server": "s2c"}
"""A rule's side → the direction of the segments it sends."""
MAX_DELAY: Final = 3600.0
"""Longest delay or pace accepted (1 h): anything longer is surely a typo."""

CLI_FORM: Final = "[client:|server:]TAG[@N[,N...]][#CONN]"
TABLE_KEYS: Final[tuple[str, ...]] = ("action", "tag", "from", "nth", "conn", "delay", "name")


class RuleError(ValueError):
    """A rule that cannot be understood or accepted: which one, and why."""


class Classified(Protocol):
    """What the engine needs to know about a segment (``proxy.flows.Tagged``
    has this shape)."""

    @property
    def tags(self) -> tuple[str, ...]: ...

    @property
    def dir(self) -> str:
        """``c2s`` (from the client) or ``s2c`` (from the server)."""
        ...

    @property
    def conn_number(self) -> int:
        """1-based, in the order the proxy first saw the connections."""
        ...

    @property
    def counters(self) -> dict[str, int]:
        """The connection's own dict, where the engine keeps its counts."""
        ...


# --- the model ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Match:
    """Which segments a rule is about."""

    tag: str | None = None
    """One of :data:`KNOWN_TAGS`; None: every segment (``any``)."""
    from_: Side | None = None
    """The side that sent it; None: either."""
    nth: frozenset[int] | None = None
    """Occurrences (1-based, counted per connection) the rule fires on; None: all."""
    conn: int | None = None
    """The proxy's connection number; None: every connection."""

    def __post_init__(self) -> None:
        if self.tag is not None and self.tag not in KNOWN_TAGS:
            raise RuleError(f"unknown tag {self.tag!r} (None matches any segment)")
        if self.from_ is not None and self.from_ not in SIDES:
            raise RuleError(f"from_ must be 'client', 'server' or None, not {self.from_!r}")
        if self.nth is not None and (
            not self.nth or not all(_is_int(n) and n >= 1 for n in self.nth)
        ):
            raise RuleError(f"nth must be None or a non-empty set of numbers ≥ 1, not {self.nth}")
        if self.conn is not None and not (_is_int(self.conn) and self.conn >= 1):
            raise RuleError(f"conn must be None or a connection number ≥ 1, not {self.conn!r}")


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """A match and what to do with the segments it fires on."""

    name: str
    match: Match
    action: Action
    delay: float | None = None
    """Seconds; delay rules only (and required for them)."""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise RuleError(f"rule name {self.name!r}: a name is one word (no spaces)")
        if self.action not in ACTIONS:
            raise RuleError(f"rule {self.name}: unknown action {self.action!r}")
        if self.action == "delay":
            if self.delay is None or not 0 <= self.delay <= MAX_DELAY:
                raise RuleError(
                    f"rule {self.name}: a delay rule needs a delay of 0 to {MAX_DELAY:g}s,"
                    f" not {self.delay!r}"
                )
        elif self.delay is not None:
            raise RuleError(f"rule {self.name}: only a delay rule has a delay")


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one segment, and when."""

    action: VerdictAction
    rule: str | None
    """The name of the rule that fired; None when none did."""
    send_at: float | None
    """When to put the frame on the wire (for ``reset``: the RSTs); None for
    ``drop`` and ``hold``, which send nothing now."""
    delay: float = 0.0
    """``send_at - now``: pace plus a delay rule's delay."""


def pass_at(now: float, pace: float | None = None) -> Verdict:
    """The verdict when no rule fires: forward, after ``pace`` if any."""
    delay = pace or 0.0
    return Verdict("pass", None, now + delay, delay)


_NAME = re.compile(r"\S+")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --- the engine ----------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _Compiled:
    """A rule as :meth:`RuleEngine.decide` reads it."""

    rule: Rule
    name: str
    key: str
    """Its key in the connections' ``counters``."""
    tag: str | None
    dir: str | None
    conn: int | None
    nth: frozenset[int] | None


class RuleEngine:
    """An ordered list of uniquely named rules, and a pace.

    Do not test an engine for truth (``engine or default``): it defines no
    ``__len__`` on purpose, and an engine without rules is still an engine.
    """

    def __init__(self, rules: Iterable[Rule] = (), pace: float | None = None) -> None:
        self._compiled: list[_Compiled] = []
        self._pace = 0.0
        self._generation: dict[str, int] = {}
        self.fired: dict[str, int] = {}
        """How many segments each rule decided."""
        self.matched: dict[str, int] = {}
        """How many segments each rule matched (and counted)."""
        for rule in rules:
            self.add(rule)
        self.set_pace(pace)

    # --- the rule list

    @property
    def rules(self) -> list[Rule]:
        """The rules in order (a copy)."""
        return [c.rule for c in self._compiled]

    @property
    def pace(self) -> float | None:
        """Seconds every forwarded segment waits; None: no pace."""
        return self._pace or None

    @property
    def stats(self) -> dict[str, dict[str, int]]:
        """``{name: {"matched": m, "fired": f}}`` for every rule, in order."""
        return {
            c.name: {"matched": self.matched.get(c.name, 0), "fired": self.fired.get(c.name, 0)}
            for c in self._compiled
        }

    def add(self, rule: Rule) -> Rule:
        """Append ``rule`` and return it as stored.  A generated name that is
        taken gets a suffix (``drop-syn@1#2``, ``#3``…; ``.2`` for a name that
        already has a ``#``); an explicit name that is taken is refused."""
        names = {c.name for c in self._compiled}
        if rule.name in names:
            if rule.name != auto_name(rule.action, rule.match):
                raise RuleError(
                    f"a rule named {rule.name!r} exists already (remove it first, or pick"
                    " another name)"
                )
            sep = "." if "#" in rule.name else "#"
            name = next(
                candidate
                for i in itertools.count(2)
                if (candidate := f"{rule.name}{sep}{i}") not in names
            )
            rule = dataclasses.replace(rule, name=name)
        generation = self._generation.get(rule.name, 0) + 1
        self._generation[rule.name] = generation
        # names have no spaces, so "name 2" never collides with another name
        key = rule.name if generation == 1 else f"{rule.name} {generation}"
        m = rule.match
        self._compiled.append(
            _Compiled(
                rule,
                rule.name,
                key,
                m.tag,
                DIRECTION[m.from_] if m.from_ is not None else None,
                m.conn,
                m.nth,
            )
        )
        self.fired[rule.name] = 0
        self.matched[rule.name] = 0
        return rule

    def remove(self, name: str) -> Rule:
        """Take out the rule called ``name`` (KeyError saying which exist if none)."""
        for i, c in enumerate(self._compiled):
            if c.name == name:
                del self._compiled[i]
                self.fired.pop(name, None)
                self.matched.pop(name, None)
                return c.rule
        known = ", ".join(c.name for c in self._compiled) or "none"
        raise KeyError(f"no rule named {name!r} (rules: {known})")

    def clear(self) -> None:
        """Remove every rule (the pace stays)."""
        self._compiled.clear()
        self.fired.clear()
        self.matched.clear()

    def set_pace(self, pace: float | None) -> None:
        """Seconds every forwarded segment waits (None or 0: none)."""
        if pace is not None and not (math.isfinite(pace) and 0 <= pace <= MAX_DELAY):
            raise RuleError(f"pace {pace}s is out of range (0 to {MAX_DELAY:g}s)")
        self._pace = pace or 0.0

    # --- deciding

    def decide(self, segment: Classified, now: float) -> Verdict:
        """The fate of ``segment``, arriving at ``now`` (see the module's
        documentation for the exact matching and counting rules)."""
        pace = self._pace
        compiled = self._compiled
        if not compiled:
            return Verdict("pass", None, now + pace, pace)
        tags = segment.tags
        direction = segment.dir
        conn = segment.conn_number
        counters: dict[str, int] | None = None
        matched = self.matched
        fired: _Compiled | None = None
        for c in compiled:
            if c.tag is not None and c.tag not in tags:
                continue
            if c.dir is not None and c.dir != direction:
                continue
            if c.conn is not None and c.conn != conn:
                continue
            matched[c.name] += 1
            if c.nth is None:
                if fired is None:
                    fired = c
                continue
            if counters is None:
                counters = segment.counters
            count = counters.get(c.key, 0) + 1
            counters[c.key] = count
            if fired is None and count in c.nth:
                fired = c
        if fired is None:
            return Verdict("pass", None, now + pace, pace)
        self.fired[fired.name] += 1
        action = fired.rule.action
        if action == "delay":
            delay = pace + (fired.rule.delay or 0.0)
            return Verdict("delay", fired.name, now + delay, delay)
        if action in ("duplicate", "reset"):
            return Verdict(action, fired.name, now + pace, pace)
        return Verdict(action, fired.name, None, 0.0)

    def describe(self) -> list[dict[str, Any]]:
        """The rules as plain data, in order, for the control API and logs."""
        return [
            {
                "name": c.name,
                "action": c.rule.action,
                "tag": c.tag or ANY,
                "from": c.rule.match.from_,
                "nth": sorted(c.nth) if c.nth is not None else None,
                "conn": c.conn,
                "delay": format_duration(c.rule.delay) if c.rule.delay is not None else None,
                "rule": format_rule(c.rule),
                "matched": self.matched.get(c.name, 0),
                "fired": self.fired.get(c.name, 0),
            }
            for c in self._compiled
        ]


# --- queues --------------------------------------------------------------------


class DelayQueue:
    """Frames waiting for their send time; equal times leave in push order."""

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be ≥ 0, not {capacity}")
        self.capacity = capacity
        self._heap: list[tuple[float, int, Any]] = []
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, item: Any, send_at: float) -> bool:
        """Queue ``item`` until ``send_at``; False when full (the caller drops
        the frame and says so)."""
        if len(self._heap) >= self.capacity:
            return False
        heapq.heappush(self._heap, (send_at, next(self._sequence), item))
        return True

    def pop_due(self, now: float) -> list[Any]:
        """Everything due by ``now``, by send time, then push order."""
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        return out

    def next_due(self) -> float | None:
        """The earliest send time queued; None when empty."""
        return self._heap[0][0] if self._heap else None


class HoldQueue:
    """Frames kept until released, by the rule that held them, in arrival order."""

    def __init__(self, capacity: int = 10_000) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be ≥ 0, not {capacity}")
        self.capacity = capacity
        self._by_rule: dict[str, deque[tuple[int, Any]]] = {}
        self._sequence = itertools.count()
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def hold(self, item: Any, rule: str) -> bool:
        """Keep ``item`` for ``rule``; False when full (the caller drops it)."""
        if self._len >= self.capacity:
            return False
        self._by_rule.setdefault(rule, deque()).append((next(self._sequence), item))
        self._len += 1
        return True

    def release(self, rule: str | None = None) -> list[Any]:
        """Take out the frames held by ``rule`` (None: every rule's), oldest first."""
        if rule is None:
            queues = list(self._by_rule.values())
            self._by_rule = {}
        else:
            queue = self._by_rule.pop(rule, None)
            queues = [queue] if queue is not None else []
        released = sorted(itertools.chain.from_iterable(queues), key=lambda entry: entry[0])
        self._len -= len(released)
        return [item for _, item in released]

    def held_by(self) -> dict[str, int]:
        """How many frames each rule holds."""
        return {rule: len(queue) for rule, queue in self._by_rule.items()}


# --- names and the compact form ------------------------------------------------


def auto_name(action: str, match: Match) -> str:
    """The name a rule gets when none is given: ``drop-server:fin@1#2``."""
    return f"{action}-{_spec(match)}"


def _spec(match: Match) -> str:
    text = f"{match.from_}:" if match.from_ is not None else ""
    text += match.tag or ANY
    if match.nth is not None:
        text += "@" + ",".join(str(n) for n in sorted(match.nth))
    if match.conn is not None:
        text += f"#{match.conn}"
    return text


def format_rule(rule: Rule) -> str:
    """The compact form, without the action: ``client:fin@1=2s``.
    ``parse_cli(rule.action, format_rule(rule))`` gives the rule back
    (under its generated name)."""
    text = _spec(rule.match)
    if rule.delay is not None:
        text += f"={format_duration(rule.delay)}"
    return text


# --- parsing --------------------------------------------------------------------


def _quantize(seconds: float) -> float:
    """To the microsecond, so that the printed form reads back as the same float."""
    return round(seconds * 1e6) / 1e6


def _duration(text: str, where: str, what: str) -> float:
    try:
        value = _quantize(parse_duration(text))
    except ValueError as exc:
        raise RuleError(f"{where}: {exc}") from None
    if value > MAX_DELAY:
        raise RuleError(f"{where}: {what} {text.strip()} is longer than {MAX_DELAY:g}s")
    return value


def _tag(text: str, where: str) -> str | None:
    if text == ANY:
        return None
    if text in KNOWN_TAGS:
        return text
    if not text:
        raise RuleError(f"{where}: the tag is missing ({', '.join(KNOWN_TAGS)}, {ANY})")
    choices = [*KNOWN_TAGS, ANY]
    close = difflib.get_close_matches(text.lower(), choices, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise RuleError(f"{where}: unknown tag {text!r}{hint}; tags are {', '.join(choices)}")


def _action(action: object, where: str, key: str) -> Action:
    if isinstance(action, str) and action in ACTIONS:
        return cast(Action, action)
    hint = ""
    if isinstance(action, str):
        close = difflib.get_close_matches(action, ACTIONS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise RuleError(f"{where}: {key} must be one of {', '.join(ACTIONS)}, not {action!r}{hint}")


def parse_cli(action: str, text: str) -> Rule:
    """``--drop syn-ack@1``, ``--delay client:fin@1=2s``, ``--hold fin@1#2``…
    → a rule with its generated name.  Errors start with the rule as written."""
    where = f"--{action} {text}"
    checked = _action(action, where, "the action")
    spec, eq, value = text.strip().partition("=")
    form = CLI_FORM + ("=DURATION" if checked == "delay" else "")
    side: Side | None = None
    if ":" in spec:
        side_text, _, spec = spec.partition(":")
        if side_text not in SIDES:
            raise RuleError(
                f"{where}: unknown side {side_text!r}: expected {form}, e.g. server:fin@1"
            )
        side = "client" if side_text == "client" else "server"
    conn: int | None = None
    if "#" in spec:
        spec, _, conn_text = spec.partition("#")
        if not conn_text.isdecimal():
            raise RuleError(
                f"{where}: a connection number after '#' is a number, not {conn_text!r}"
                f" (expected {form})"
            )
        conn = int(conn_text)
        if conn < 1:
            raise RuleError(f"{where}: connection numbers start at 1 (#1 is the first)")
    nth: frozenset[int] | None = None
    if "@" in spec:
        spec, _, nth_text = spec.partition("@")
        parts = nth_text.split(",")
        if not all(p.isdecimal() for p in parts):
            raise RuleError(
                f"{where}: nth is a number or numbers separated by commas (@1 or @1,3),"
                f" not {nth_text!r} (expected {form})"
            )
        numbers = [int(p) for p in parts]
        if min(numbers) < 1:
            raise RuleError(f"{where}: nth must be ≥ 1 (the first occurrence is @1)")
        nth = frozenset(numbers)
    tag = _tag(spec, where)
    delay: float | None = None
    if checked == "delay":
        if not eq:
            raise RuleError(f"{where}: a delay needs a duration, e.g. {text.strip()}=2s")
        delay = _duration(value, where, "the delay")
    elif eq:
        raise RuleError(f"{where}: only --delay takes '=DURATION'")
    match = Match(tag, side, nth, conn)
    return Rule(auto_name(checked, match), match, checked, delay)


def _kind(value: object) -> str:
    """How a TOML value's type is named to a person."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, float):
        return "a decimal number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def parse_table(table: Mapping[str, Any], where: str) -> Rule:
    """One rule from a parsed TOML table (see the module documentation for
    the keys).  ``where`` (file, line, position) starts every error."""
    if not isinstance(table, Mapping):
        raise RuleError(f"{where}: a rule is a table, not {_kind(table)}")
    unknown = [key for key in table if key not in TABLE_KEYS]
    if unknown:
        raise RuleError(f"{where}: unknown key {unknown[0]!r} (allowed: {', '.join(TABLE_KEYS)})")
    if "action" not in table:
        raise RuleError(f"{where}: 'action' is missing ({', '.join(ACTIONS)})")
    action = _action(table["action"], where, "'action'")

    tag_value = table.get("tag", ANY)
    if not isinstance(tag_value, str):
        raise RuleError(f"{where}: 'tag' must be a string such as \"fin\", not {_kind(tag_value)}")
    tag = _tag(tag_value, where)

    side_value = table.get("from")
    side: Side | None = None
    if side_value is not None:
        if side_value not in SIDES:
            raise RuleError(f'{where}: \'from\' must be "client" or "server", not {side_value!r}')
        side = "client" if side_value == "client" else "server"

    nth: frozenset[int] | None = None
    if "nth" in table:
        nth_value = table["nth"]
        numbers = nth_value if isinstance(nth_value, list) else [nth_value]
        if not numbers or not all(_is_int(n) for n in numbers):
            raise RuleError(
                f"{where}: 'nth' must be a number or a non-empty list of numbers"
                f" (nth = 1, nth = [1, 3]), not {nth_value!r}"
            )
        if min(numbers) < 1:
            raise RuleError(f"{where}: 'nth' must be ≥ 1 (the first occurrence is 1)")
        nth = frozenset(numbers)

    conn: int | None = None
    if "conn" in table:
        conn_value = table["conn"]
        if not _is_int(conn_value) or conn_value < 1:
            raise RuleError(f"{where}: 'conn' must be a connection number ≥ 1, not {conn_value!r}")
        conn = conn_value

    delay: float | None = None
    if action == "delay":
        if "delay" not in table:
            raise RuleError(f'{where}: a delay rule needs delay = "DURATION", e.g. delay = "2s"')
        delay_value = table["delay"]
        if not isinstance(delay_value, str):
            raise RuleError(
                f'{where}: \'delay\' must be a string with a unit, e.g. "2s" or "250ms",'
                f" not {_kind(delay_value)} ({delay_value!r})"
            )
        delay = _duration(delay_value, where, "the delay")
    elif "delay" in table:
        raise RuleError(f"{where}: only a delay rule takes 'delay' (this one is {action})")

    match = Match(tag, side, nth, conn)
    name = table.get("name")
    if name is None:
        name = auto_name(action, match)
    elif not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RuleError(
            f"{where}: 'name' must be one word without spaces, e.g. \"slow-fin\", not {name!r}"
        )
    return Rule(name, match, action, delay)


def parse_pace(text: str) -> float:
    """``--pace 250ms`` → 0.25."""
    return _duration(text, f"--pace {text}", "the pace")
