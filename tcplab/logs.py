"""The one structlog setup every tcplab process uses.

``configure(component, fmt)`` is called once at process start:

* ``fmt="json"`` — one JSON object per line (what the runner reads);
* ``fmt="console"`` — structlog's coloured console renderer, for a person;
* ``fmt="auto"`` — console when the stream is a tty, JSON lines otherwise.

Every line carries ``component`` and ``event`` and the record's own ``ts``
(when the fact happened: :mod:`tcplab.events`).  The processor chain never
supplies ``ts``; it adds ``logged_ts``, when the line was written, so the gap
between a fact and its report can be measured.  A structlog call without
``ts`` is a bug: its line does not parse as an event, and the runner reports
it as a stray line.  Records from the stdlib ``logging`` module (trio,
pyroute2) go through the same chain as ``log_message`` events, with ``ts``
the moment the library logged; a warning from a library is a JSON line too,
not a stray text line in the event stream.

Exceptions: the console renderer formats tracebacks itself (structlog's
guidance: no ``format_exc_info`` ahead of it); JSON lines carry them as
structured ``exception`` fields (``dict_tracebacks``).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["auto", "console", "json"]
FORMATS: tuple[LogFormat, ...] = ("auto", "console", "json")


def _add_logged_ts(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    # when the line is written; never the fact's time (that is ``ts``)
    event_dict["logged_ts"] = round(time.time(), 6)
    return event_dict


def _foreign(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    """A stdlib logging record: ``log_message`` at the moment it was logged."""
    record = event_dict.get("_record")
    event_dict["message"] = str(event_dict.get("event", ""))
    event_dict["event"] = "log_message"
    if record is not None:
        event_dict["ts"] = round(record.created, 6)
        event_dict["log_level"] = record.levelname.lower()
    return event_dict


def _reorder(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    # ts, component, event first, so raw JSON lines read well in a terminal.
    head = {k: event_dict.pop(k) for k in ("ts", "component", "event") if k in event_dict}
    head.update(event_dict)
    return head


def resolve_format(fmt: LogFormat, stream: TextIO) -> Literal["console", "json"]:
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return "console" if isatty is not None and isatty() else "json"
    if fmt not in FORMATS:
        raise ValueError(f"log format {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


def configure(
    component: str,
    fmt: LogFormat = "auto",
    stream: TextIO | None = None,
    level: int = logging.INFO,
) -> Literal["console", "json"]:
    """Set up structlog (and stdlib logging) for this process; returns the
    format chosen."""
    out = stream if stream is not None else sys.stdout
    chosen = resolve_format(fmt, out)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        _add_logged_ts,
    ]
    renderer: Any
    tracebacks: list[Any]
    if chosen == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        tracebacks = [structlog.processors.dict_tracebacks]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_colour_ok(out))
        tracebacks = []
    structlog.configure(
        processors=[
            *shared,
            *tracebacks,
            _reorder,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        context_class=dict,
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(component=component)

    # stdlib loggers (trio, pyroute2) through the same chain.
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, _foreign],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                _reorder,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    return chosen


def _colour_ok(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def get_logger(**initial: Any) -> Any:
    """A bound structlog logger; ``initial`` fields go on every line."""
    return structlog.get_logger(**initial)
