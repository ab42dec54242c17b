"""The processor chains of the one structlog setup (:mod:`core.logs`): how
an event's fields become a line, as JSON or for the console, and the bound
logger that runs them.

Exceptions: the console renderer formats tracebacks itself (structlog's
guidance: no ``format_exc_info`` ahead of it); JSON lines carry them as
structured ``exception`` fields (``dict_tracebacks``).

Cost: a server under load writes a dozen lines per connection.  So the JSON
chain is one processor (:func:`json_line`: ``component``, ``level`` and
``logged_ts`` added, ``ts``, ``component``, ``event`` first), the text made
by the standard library's C encoder built once (``JSONEncoder.encode``
builds a new one per call); and the bound logger class hands the fields to
the chain without copying them twice more (:func:`bound_logger_class`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

__all__ = [
    "add_logged_ts",
    "bound_logger_class",
    "foreign",
    "json_line",
    "render_json",
    "reorder",
]


def _micros(t: float) -> float:
    """``t`` to the microsecond (``round(t, 6)`` costs ten times more)."""
    return round(t * 1_000_000) / 1_000_000


def add_logged_ts(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """Add ``logged_ts``: when the line is written; never the fact's time
    (that is ``ts``)."""
    event_dict["logged_ts"] = _micros(time.time())
    return event_dict


_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "err": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
    "msg": logging.INFO,
}


def bound_logger_class(min_level: int) -> type[structlog.BoundLoggerBase]:
    """What ``make_filtering_bound_logger(min_level)`` makes, minus two
    copies of the keyword arguments per call: a method below ``min_level``
    does nothing; the others run the processors once and hand the line to
    the logger.  (structlog's own passes the fields through three layers of
    ``**kwargs``: a fifth of a line's cost for a record of fifteen fields.)"""

    def make(name: str, level: int) -> Callable[..., None]:
        if level < min_level:

            def nop(self: Any, event: str, *args: Any, **kw: Any) -> None:
                return None

            nop.__name__ = name
            return nop
        exc_info = name == "exception"

        def meth(self: Any, event: str, *args: Any, **kw: Any) -> None:
            if args:
                event = event % args
            if exc_info:
                kw.setdefault("exc_info", True)
            self._write(name, event, kw)

        meth.__name__ = name
        return meth

    class BoundLogger(structlog.BoundLoggerBase):
        def _write(self, method_name: str, event: str, kw: dict[str, Any]) -> None:
            event_dict: Any = {**self._context, **kw} if self._context else kw
            event_dict["event"] = event
            try:
                for proc in self._processors:
                    event_dict = proc(self._logger, method_name, event_dict)
            except structlog.DropEvent:
                return
            self._logger.msg(event_dict)

        def log(self, level: int, event: str, *args: Any, **kw: Any) -> None:
            if level >= min_level:
                name = logging.getLevelName(level).lower()
                self._write(name, event % args if args else event, kw)

        def is_enabled_for(self, level: int) -> bool:
            return level >= min_level

        def get_effective_level(self) -> int:
            return min_level

    for name, level in _LEVELS.items():
        setattr(BoundLogger, name, make(name, level))
    return BoundLogger


def foreign(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """A stdlib logging record: ``log_message`` at the moment it was logged."""
    record = event_dict.get("_record")
    event_dict["message"] = str(event_dict.get("event", ""))
    event_dict["event"] = "log_message"
    if record is not None:
        event_dict["ts"] = round(record.created, 6)
        event_dict["log_level"] = record.levelname.lower()
    return event_dict


_HEAD = ("ts", "component", "event")
_LEVEL_NAMES = {"warn": "warning", "exception": "error"}


def _json_fallback(value: Any) -> Any:
    # what structlog's JSONRenderer does with a value JSON cannot hold
    return repr(value)


_ENCODER = json.JSONEncoder(default=_json_fallback)


def _make_encode() -> Callable[[Any], str]:
    """``_ENCODER.encode``, without rebuilding the C encoder on every call
    (what ``JSONEncoder.encode`` does): the same text, a quarter cheaper.
    No check for circular structures (a line's fields are flat)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # an interpreter without the C accelerator
        return _ENCODER.encode
    iterencode = make(
        None,
        _json_fallback,
        json.encoder.encode_basestring_ascii,
        None,
        ": ",
        ", ",
        False,
        False,
        True,
    )
    join = "".join

    def encode(value: Any) -> str:
        return join(iterencode(value, 0))

    return encode


_encode = _make_encode()


def json_line(component: str) -> Callable[[Any, str, MutableMapping[str, Any]], str]:
    """The whole JSON chain, in one processor: the record's fields with
    ``ts``, ``component``, ``event`` first, then ``level`` and ``logged_ts``,
    and a structured ``exception`` when there is one; one line of JSON.
    ``component`` is the one :func:`core.logs.configure` bound; other context bound
    with ``structlog.contextvars`` is merged as ``merge_contextvars`` would
    (looked for only once something else was bound: the look costs a tenth
    of a line)."""
    encode = _encode
    levels = _LEVEL_NAMES
    tracebacks = structlog.processors.dict_tracebacks
    merge = structlog.contextvars.merge_contextvars

    def render(logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> str:
        if _other_context():
            merge(logger, method_name, event_dict)  # in place
        line: dict[str, Any] = {}
        if "ts" in event_dict:
            line["ts"] = event_dict.pop("ts")
        line["component"] = event_dict.pop("component", component)
        line["event"] = event_dict.pop("event", None)
        line.update(event_dict)
        line["level"] = levels.get(method_name, method_name)
        line["logged_ts"] = _micros(time.time())
        if "exc_info" in line:
            return encode(tracebacks(logger, method_name, line))
        return encode(line)

    return render


def _other_context() -> bool:
    """Whether anything but ``component`` was ever bound with
    ``structlog.contextvars`` (structlog keeps one ContextVar per key bound;
    when that cannot be seen, assume so)."""
    known = getattr(structlog.contextvars, "_CONTEXT_VARS", None)
    return not isinstance(known, dict) or len(known) > 1


def reorder(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """``ts``, ``component``, ``event`` first, so raw JSON lines read well in
    a terminal."""
    head = {k: event_dict.pop(k) for k in _HEAD if k in event_dict}
    head.update(event_dict)
    return head


def render_json(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> str:
    """The last step of the chain for stdlib records in JSON mode: one line,
    with the encoder :func:`json_line` uses."""
    return _encode(event_dict)
