"""The one structlog setup every tcplab process uses.

``configure(component, fmt)`` is called once at process start:

* ``fmt="json"`` — one JSON object per line (what the runner reads);
* ``fmt="console"`` — structlog's coloured console renderer, for a person;
* ``fmt="auto"`` — console when the stream is a tty, JSON lines otherwise.

Every line carries ``ts`` (wall clock, seconds, microsecond precision: all
namespaces share one kernel clock, so lines from several processes merge by
``ts``), ``component`` and ``event``.  Records from the stdlib ``logging``
module (trio, pyroute2) go through the same processor chain, so a warning
from a library is a JSON line too, not a stray text line in the event stream.
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


def _add_ts(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> Any:
    # time.time() rounded to the microsecond: the field is comparable across
    # processes, and lines stay short.
    event_dict.setdefault("ts", round(time.time(), 6))
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
        _add_ts,
    ]
    renderer: Any
    if chosen == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_colour_ok(out))
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
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
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
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
