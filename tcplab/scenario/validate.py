"""Checking a scenario's values against the field tables (pure, but for
asking the kernel which sysctls it has).

:class:`Checker` checks one table at a time against its fields in
:mod:`tcplab.scenario.spec`: every key known, every required key there,
every value of the kind its field says.  :meth:`Checker.value` hands each
value to the checker of its field's kind (:data:`KINDS`), one small function
per kind, so what a kind allows is read in one place.  Every failure is a
:class:`ScenarioError` that names the file, the line
(:func:`tcplab.scenario.locate.locate`), the field and what was expected:
a person fixing a scenario should not have to guess where.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable
from typing import Any

from core.policies import ClosePolicy
from core.units import format_duration, parse_duration
from tcplab.scenario.locate import locate
from tcplab.scenario.spec import (
    HOUR,
    SIDES_SYSCTL,
    SYSCTL_KEY,
    SYSCTL_VALUE,
    Field,
    known_sysctl,
)


class ScenarioError(ValueError):
    """An invalid scenario file: ``file:line: field: what was expected``."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class Checker:
    """Checks the tables of one scenario file, ``text`` read from ``path``."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, table: str, key: str | None, message: str, index: int = 0) -> ScenarioError:
        line = locate(self.text, table, key, index)
        if not line and key is not None:  # a table written as [table.key]
            line = locate(self.text, f"{table}.{key}".lstrip("."), None, index)
        where = f"{self.path}:{line}" if line else self.path
        field = ".".join(p for p in (table, key) if p)
        return ScenarioError(f"{where}: {field or 'file'}: {message}")

    def table(self, data: Any, spec: Field, table: str, index: int = 0) -> dict[str, Any]:
        """A table checked against ``spec.sub``: every key known, every value
        valid, every required key there."""
        fields = spec.sub or {}
        if not isinstance(data, dict):
            raise self.fail(table, None, "expected a table", index)
        for key in data:
            if key not in fields:
                allowed = ", ".join(fields)
                raise self.fail(table, key, f"unknown key (allowed: {allowed})", index)
        for key in spec.required:
            if key not in data:
                raise self.fail(table, None, f"missing {key!r} ({fields[key].description})", index)
        return {
            key: self.value(value, fields[key], table, key, index) for key, value in data.items()
        }

    def value(self, value: Any, field: Field, table: str, key: str, index: int) -> Any:
        """``value`` of ``table.key`` checked as ``field`` says, in the form
        the scenario keeps it (a duration in seconds, a list as a tuple…)."""
        check = KINDS.get(field.kind)
        if check is None:
            raise AssertionError(field.kind)
        return check(Value(self, value, field, table, key, index))


@dataclasses.dataclass(frozen=True, slots=True)
class Value:
    """One value being checked, with what it is checked against and where it
    is written: the pieces every kind's checker builds on.

    A message always shows the whole value (``value``), even when one item
    of it is what is wrong: that is what the person sees in the file."""

    checker: Checker
    value: Any
    field: Field
    table: str
    key: str
    index: int

    def fail(self, message: str) -> ScenarioError:
        return self.checker.fail(self.table, self.key, message, self.index)

    def bad(self, expected: str) -> ScenarioError:
        shown = repr(self.value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        return self.fail(f"expected {expected} ({self.field.description}), got {shown}")

    def number(self, n: Any, what: str = "a whole number") -> int:
        if not _is_int(n):
            raise self.bad(what)
        field = self.field
        low = int(field.minimum) if field.minimum is not None else 0
        high = int(field.maximum) if field.maximum is not None else 2**31
        if not low <= n <= high:
            raise self.bad(f"{what}, {low} to {high}")
        return int(n)

    def text(self, s: Any, what: str = "a string", *, use_pattern: bool = True) -> str:
        field = self.field
        pattern = field.pattern if use_pattern else None
        if not isinstance(s, str):
            raise self.bad(what)
        if len(s) > field.max_length:
            raise self.bad(f"{what} of at most {field.max_length} characters")
        if pattern is not None and not re.fullmatch(pattern, s):
            if field.hint:
                raise self.fail(field.hint)
            raise self.bad(f"{what} matching {pattern}")
        return s

    def duration(self, s: Any) -> float:
        if not isinstance(s, str) or len(s) > 32:
            raise self.bad('a duration string like "250ms"')
        try:
            seconds = parse_duration(s)
        except ValueError as exc:
            raise self.fail(str(exc)) from None
        low = self.field.minimum or 0.0
        high = self.field.maximum if self.field.maximum is not None else HOUR
        if not low <= seconds <= high:
            raise self.bad(f"a duration from {format_duration(low)} to {format_duration(high)}")
        step = self.field.step
        if step is not None and abs(seconds / step - round(seconds / step)) > 1e-6:
            units = {1.0: "seconds", 0.001: "milliseconds"}.get(step, format_duration(step))
            raise self.bad(f"a duration in whole {units}")
        return seconds

    def items(self, v: Any, what: str) -> list[Any]:
        if not isinstance(v, list):
            raise self.bad(what)
        if len(v) > self.field.max_items:
            raise self.bad(f"{what}, at most {self.field.max_items}")
        return v

    def choice(self, c: Any) -> str:
        choices = self.field.choices
        if isinstance(c, str) and c in choices:
            return c
        close = difflib.get_close_matches(str(c), choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        shown = repr(c) if len(repr(c)) <= 40 else repr(c)[:37] + "..."
        raise self.fail(f"unknown value {shown}{hint}: expected one of {', '.join(choices)}")


# --- one checker per kind of field ---------------------------------------------------


def _str(v: Value) -> str:
    return v.text(v.value)


def _int(v: Value) -> int:
    return v.number(v.value)


def _int_or_list(v: Value) -> int | list[int]:
    if isinstance(v.value, list):
        return [v.number(n) for n in v.items(v.value, "numbers")]
    return v.number(v.value)


def _bool(v: Value) -> bool:
    if not isinstance(v.value, bool):
        raise v.bad("true or false")
    return v.value


def _duration(v: Value) -> float:
    return v.duration(v.value)


def _choice(v: Value) -> str:
    return v.choice(v.value)


def _choice_list(v: Value) -> tuple[str, ...]:
    return tuple(v.choice(c) for c in v.items(v.value, "a list"))


def _str_list(v: Value) -> tuple[str, ...]:
    return tuple(v.text(s, "strings") for s in v.items(v.value, "a list of strings"))


def _server_close(v: Value) -> str:
    text = v.text(v.value, use_pattern=False)  # the grammar's own parser says what is wrong
    try:
        ClosePolicy.parse(text)
    except ValueError as exc:
        raise v.fail(str(exc)) from None
    return text


def _duration_pair(v: Value) -> tuple[float, float]:
    pair = v.items(v.value, 'two durations, ["900ms", "1500ms"]')
    if len(pair) != 2:
        raise v.bad('two durations, ["900ms", "1500ms"]')
    low, high = (v.duration(d) for d in pair)
    if low > high:
        raise v.fail(f"{pair[0]} is more than {pair[1]}")
    return (low, high)


def _duration_map(v: Value) -> dict[str, float]:
    if not isinstance(v.value, dict):
        raise v.bad('a table of state = "duration"')
    return {v.choice(state): v.duration(spelled) for state, spelled in v.value.items()}


def _count_map(v: Value) -> dict[str, int]:
    if not isinstance(v.value, dict) or len(v.value) > v.field.max_items:
        raise v.bad(f"a table of name = number, at most {v.field.max_items}")
    out: dict[str, int] = {}
    for name, count in v.value.items():
        if not re.fullmatch(v.field.pattern or "", name):
            raise v.fail(f"{name!r} is not {v.field.hint or 'a counter name'}")
        out[name] = v.number(count)
    return out


def _sysctl_map(v: Value) -> dict[str, dict[str, str]]:
    if not isinstance(v.value, dict):
        raise v.bad("a table of side = { key = value }")
    out: dict[str, dict[str, str]] = {}
    for side, values in v.value.items():
        if side not in SIDES_SYSCTL:
            raise v.fail(f"unknown side {side!r} (cli, mbx, srv)")
        if not isinstance(values, dict) or len(values) > 64:
            raise v.bad("a table per side, at most 64 keys")
        for name, setting in values.items():
            _sysctl(v, side, name, setting)
        out[side] = {k: str(s) for k, s in values.items()}
    return out


def _sysctl(v: Value, side: str, name: str, setting: Any) -> None:
    """One ``name = setting`` of ``side``: a net.* sysctl this kernel has,
    set to a plain value."""
    if not name.startswith("net."):
        raise v.fail(f"{side}: {name!r}: only net.* sysctls are per namespace")
    if not re.fullmatch(SYSCTL_KEY, name):
        raise v.fail(f"{side}: {name!r} is not a sysctl name")
    if not known_sysctl(name):
        raise v.fail(f"{side}: {name!r}: no such sysctl on this kernel")
    if isinstance(setting, bool) or not isinstance(setting, str | int):
        raise v.bad(f"{name} as a string or number")
    if isinstance(setting, int) and abs(setting) > 2**63:
        raise v.bad(f"{name}: a number that fits in 64 bits")
    if not re.fullmatch(SYSCTL_VALUE, str(setting)):
        raise v.bad(f"{name}: a number, numbers or a name ({SYSCTL_VALUE})")


def _table(v: Value) -> Any:
    return v.value  # checked by the caller against its sub-fields


KINDS: dict[str, Callable[[Value], Any]] = {
    "str": _str,
    "int": _int,
    "int-or-list": _int_or_list,
    "bool": _bool,
    "duration": _duration,
    "choice": _choice,
    "choice-list": _choice_list,
    "str-list": _str_list,
    "server-close": _server_close,
    "duration-pair": _duration_pair,
    "duration-map": _duration_map,
    "count-map": _count_map,
    "sysctl-map": _sysctl_map,
    "table": _table,
    "table-list": _table,
}
"""Each kind of :class:`~tcplab.scenario.spec.Field`, and its checker."""
