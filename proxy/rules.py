"""Applying fault rules: counting, firing, pace, delay and hold queues (sans-IO).

The grammar (what a rule says, and parsing it) is :mod:`core.rules`.

A rule (``drop syn-ack@1``, ``delay client:fin@1=2s``…) names segments by
role and says what happens to them.

Matching and counting
---------------------

A rule *matches* a segment when the segment has the rule's tag (``any``
matches every segment), comes from the rule's side (``client:`` /
``server:``, omitted = either) and belongs to the rule's connection (``#N``,
the proxy's connection number; omitted = every connection).  Every rule that
matches a segment counts it, per connection (``nth`` is 1-based: ``@1`` is
the first matching segment of each connection).  Then the first rule in list
order whose count is in its ``nth`` set (``@1,3``; omitted = every
occurrence) *fires* and decides the segment's fate; later rules only count.
So ``drop fin@1`` then ``delay fin@2=1s`` drops the first FIN of each
connection and delays the second, as one would expect.  Counts live in a
dict the connection owns, so they die with it: memory stays bounded.

``pace`` delays every forwarded segment by the same amount: slow motion, so
a person can follow and a 5 ms poller sees every state.  A ``delay`` rule's
delay adds to the pace.  Segments whose send times are equal leave in the
order they were decided (:class:`DelayQueue`), so pacing never reorders.

Pure: :meth:`RuleEngine.decide` takes the segment and ``now`` and answers
with a :class:`Verdict` saying when the frame should leave; the forwarder
sleeps.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
from collections.abc import Iterable
from typing import Any, Literal, Protocol

from core.rules import ANY, MAX_DELAY, Rule, RuleError, auto_name, format_rule
from core.units import format_duration

VerdictAction = Literal["pass", "drop", "delay", "duplicate", "reset", "hold"]
_DIR_OF: dict[str, str] = {"client": "c2s", "server": "s2c"}


class Classified(Protocol):
    """What the engine needs to know about a segment (``proxy.flows.Tagged``)."""

    @property
    def tags(self) -> tuple[str, ...]: ...
    @property
    def dir(self) -> str: ...
    @property
    def conn_number(self) -> int: ...
    @property
    def counters(self) -> dict[str, int]: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    action: VerdictAction
    rule: str | None
    send_at: float | None
    """When to put the frame on the wire (None for drop, hold and reset)."""
    delay: float = 0.0


class RuleEngine:
    """An ordered list of rules and a pace."""

    def __init__(self, rules: Iterable[Rule] = (), pace: float | None = None) -> None:
        self._rules: list[Rule] = []
        self.pace: float | None = None
        self.fired: dict[str, int] = {}
        self.matched: dict[str, int] = {}
        for rule in rules:
            self.add(rule)
        self.set_pace(pace)

    @property
    def rules(self) -> list[Rule]:
        return list(self._rules)

    def add(self, rule: Rule) -> Rule:
        """Append ``rule``; an automatic name that is taken gets ``#2``, ``#3``…;
        an explicit duplicate name is refused."""
        names = {r.name for r in self._rules}
        if rule.name in names:
            if rule.name != auto_name(rule.action, rule.match):
                raise RuleError(f"a rule named {rule.name!r} exists already")
            base = rule.name
            for i in itertools.count(2):
                candidate = f"{base}#{i}" if "#" not in base else f"{base}.{i}"
                if candidate not in names:
                    break
            rule = dataclasses.replace(rule, name=candidate)
        self._rules.append(rule)
        self.fired.setdefault(rule.name, 0)
        self.matched.setdefault(rule.name, 0)
        return rule

    def remove(self, name: str) -> Rule:
        for i, rule in enumerate(self._rules):
            if rule.name == name:
                del self._rules[i]
                # its counts go with it: add/rm cycles must not grow them
                self.fired.pop(name, None)
                self.matched.pop(name, None)
                return rule
        known = ", ".join(r.name for r in self._rules) or "none"
        raise KeyError(f"no rule named {name!r} (rules: {known})")

    def clear(self) -> None:
        self._rules.clear()
        self.fired.clear()
        self.matched.clear()

    def set_pace(self, pace: float | None) -> None:
        if pace is not None and not 0 <= pace <= MAX_DELAY:
            raise RuleError(f"pace {pace}s is out of range (0 to {MAX_DELAY:g}s)")
        self.pace = pace or None

    def decide(self, segment: Classified, now: float) -> Verdict:
        """The fate of ``segment`` arriving at ``now``."""
        pace = self.pace or 0.0
        if not self._rules:
            return Verdict("pass", None, now + pace, pace)
        tags = segment.tags
        direction = segment.dir
        counters = segment.counters
        fired: Rule | None = None
        for rule in self._rules:
            m = rule.match
            if m.tag is not None and m.tag not in tags:
                continue
            if m.from_ is not None and _DIR_OF[m.from_] != direction:
                continue
            if m.conn is not None and m.conn != segment.conn_number:
                continue
            count = counters.get(rule.name, 0) + 1
            counters[rule.name] = count
            self.matched[rule.name] = self.matched.get(rule.name, 0) + 1
            if fired is None and (m.nth is None or count in m.nth):
                fired = rule
        if fired is None:
            return Verdict("pass", None, now + pace, pace)
        self.fired[fired.name] = self.fired.get(fired.name, 0) + 1
        if fired.action == "delay":
            delay = pace + (fired.delay or 0.0)
            return Verdict("delay", fired.name, now + delay, delay)
        if fired.action == "duplicate":
            return Verdict("duplicate", fired.name, now + pace, pace)
        return Verdict(fired.action, fired.name, None, 0.0)

    def describe(self) -> list[dict[str, Any]]:
        """The rules as plain data, for the control API and logs."""
        return [
            {
                "name": r.name,
                "action": r.action,
                "tag": r.match.tag or ANY,
                "from": r.match.from_,
                "nth": sorted(r.match.nth) if r.match.nth else None,
                "conn": r.match.conn,
                "delay": format_duration(r.delay) if r.delay is not None else None,
                "rule": format_rule(r),
                "matched": self.matched.get(r.name, 0),
                "fired": self.fired.get(r.name, 0),
            }
            for r in self._rules
        ]


# --- queues --------------------------------------------------------------------


class DelayQueue:
    """Frames waiting for their send time; equal times leave in push order."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._heap: list[tuple[float, int, Any]] = []
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, item: Any, send_at: float) -> bool:
        """False when full (the caller drops the frame and says so)."""
        if len(self._heap) >= self.capacity:
            return False
        heapq.heappush(self._heap, (send_at, next(self._counter), item))
        return True

    def pop_due(self, now: float) -> list[Any]:
        out = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            out.append(heapq.heappop(heap)[2])
        return out

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None


class HoldQueue:
    """Frames kept until released, by rule, in arrival order."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._items: list[tuple[str, Any]] = []

    def __len__(self) -> int:
        return len(self._items)

    def hold(self, item: Any, rule: str) -> bool:
        if len(self._items) >= self.capacity:
            return False
        self._items.append((rule, item))
        return True

    def release(self, rule: str | None = None) -> list[Any]:
        """The frames held by ``rule`` (None: all), oldest first."""
        out = [item for name, item in self._items if rule is None or name == rule]
        self._items = [(n, i) for n, i in self._items if not (rule is None or n == rule)]
        return out

    def held_by(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for name, _ in self._items:
            counts[name] = counts.get(name, 0) + 1
        return counts
