"""The codec between typed records and event lines: :func:`to_fields`
turns a record into a line's fields, :func:`from_fields` and
:func:`parse_record` read a line back into a record, :func:`emit` logs one.

Every component writes one JSON object per line, and every reader of events
across a process boundary takes records, never dicts: this is the one place
that knows how the two correspond (``None`` fields left out, tuples as JSON
arrays, ``event`` choosing the record type).  Writing is on every daemon's
hot path, so what can be worked out once per record type is cached.

This module is pure: records and dicts in and out; :func:`emit` hands its
fields to the logger it is given.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any, Final

from core.records import (
    APP_EVENTS,
    App,
    Record,
    Segment,
    TcpReset,
    TcpRetransmit,
    TcpState,
)
from core.reports import (
    ConversationDone,
    DaemonDone,
    DaemonReady,
    ExpressUnavailable,
    FrameDropped,
    LogMessage,
    ObserverStart,
    ObserverStop,
    RulesChanged,
    RunDone,
    ScenarioStart,
)

__all__ = [
    "KNOWN_EVENTS",
    "RECORD_TYPES",
    "RecordError",
    "emit",
    "from_fields",
    "parse_line",
    "parse_record",
    "to_fields",
]

RECORD_TYPES: Final[tuple[type[Record], ...]] = (
    TcpState,
    TcpRetransmit,
    TcpReset,
    Segment,
    DaemonReady,
    DaemonDone,
    ObserverStart,
    ObserverStop,
    ConversationDone,
    FrameDropped,
    RulesChanged,
    ExpressUnavailable,
    ScenarioStart,
    RunDone,
    LogMessage,
)
_BY_NAME: Final[dict[str, type[Record]]] = {cls.EVENT: cls for cls in RECORD_TYPES}
KNOWN_EVENTS: Final = frozenset(_BY_NAME) | APP_EVENTS

_TUPLE_FIELDS: dict[type[Record], frozenset[str]] = {}
_INIT_FIELDS: dict[type[Record], frozenset[str]] = {}


def _fields_of(cls: type[Record]) -> tuple[frozenset[str], frozenset[str]]:
    init = _INIT_FIELDS.get(cls)
    if init is None:
        fields = dataclasses.fields(cls)
        init = frozenset(f.name for f in fields if f.init)
        tuples = frozenset(
            f.name for f in fields if isinstance(f.type, str) and f.type.startswith("tuple[")
        )
        _INIT_FIELDS[cls] = init
        _TUPLE_FIELDS[cls] = tuples
    return init, _TUPLE_FIELDS[cls]


_LINE_FIELDS: dict[type[Record], tuple[str, ...]] = {}
_PLAIN = (str, int, float, bool)


def _line_fields(cls: type[Record]) -> tuple[str, ...]:
    """The fields a line carries after ts, component and event (cached: a
    busy daemon writes thousands of lines a second)."""
    names = _LINE_FIELDS.get(cls)
    if names is None:
        names = tuple(
            f.name for f in dataclasses.fields(cls) if f.name not in ("ts", "component", "kind")
        )
        _LINE_FIELDS[cls] = names
    return names


def to_fields(record: Record) -> dict[str, Any]:
    """The line's fields: ``ts``, ``component``, ``event`` first, None left out."""
    out: dict[str, Any] = {"ts": record.ts}
    if record.component:
        out["component"] = record.component
    out["event"] = record.event
    for name in _line_fields(type(record)):
        value = getattr(record, name)
        if value is None:
            continue
        if type(value) in _PLAIN:
            out[name] = value
        elif isinstance(value, tuple):
            out[name] = [dict(v) if isinstance(v, Mapping) else v for v in value]
        elif isinstance(value, Mapping):
            out[name] = dict(value)
        else:
            out[name] = value
    return out


class RecordError(ValueError):
    """A line that claims to be an event but whose fields do not fit its kind."""


def from_fields(fields: Mapping[str, Any]) -> Record:
    """Rebuild a typed record from a parsed log line (unknown keys ignored).
    Raises :class:`RecordError` naming the field when a line does not fit."""
    name = fields.get("event")
    if not isinstance(name, str):
        raise RecordError("event: missing or not a string")
    cls: type[Record] | None = App if name in APP_EVENTS else _BY_NAME.get(name)
    if cls is None:
        raise RecordError(f"event: no record type for {name!r}")
    init, tuples = _fields_of(cls)
    kwargs = {k: v for k, v in fields.items() if k in init}
    for key in tuples & kwargs.keys():
        value = kwargs[key]
        if isinstance(value, list):
            kwargs[key] = tuple(value)
    if cls is App:
        kwargs["kind"] = name
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise RecordError(f"{name}: {exc}") from None
    except ValueError as exc:
        raise RecordError(str(exc)) from None


def parse_line(line: str | bytes) -> dict[str, Any] | None:
    """One JSON log line → dict, or None when the line is not an event
    (a traceback, a stray print).  Never raises on bad input."""
    try:
        value = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(value, dict) or "event" not in value or "ts" not in value:
        return None
    if not isinstance(value["ts"], int | float) or isinstance(value["ts"], bool):
        return None
    return value


def parse_record(line: str | bytes) -> Record | None:
    """One JSON log line → a typed record, or None when it is not one."""
    fields = parse_line(line)
    if fields is None:
        return None
    try:
        return from_fields(fields)
    except RecordError:
        return None


def emit(log: Any, record: Record) -> None:
    """Log ``record`` on a structlog logger as one event line (its
    ``component`` comes from the logger's context)."""
    fields = to_fields(record)
    name = fields.pop("event")
    fields.pop("component", None)
    getattr(log, record.level)(name, **fields)
