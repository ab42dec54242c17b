"""The one structlog setup every tcplab process uses.

``configure(component, fmt)`` is called once at process start:

* ``fmt="json"`` — one JSON object per line (what the runner reads);
* ``fmt="console"`` — structlog's coloured console renderer, for a person;
* ``fmt="auto"`` — console when the stream is a tty, JSON lines otherwise.

Every line carries ``component`` and ``event`` and the record's own ``ts``
(when the fact happened: :mod:`core.events`).  The processor chain never
supplies ``ts``; it adds ``logged_ts``, when the line was written, so the gap
between a fact and its report can be measured.  A structlog call without
``ts`` is a bug: its line does not parse as an event, and the runner reports
it as a stray line.  Records from the stdlib ``logging`` module (trio,
pyroute2) go through the same chain as ``log_message`` events, with ``ts``
the moment the library logged; a warning from a library is a JSON line too,
not a stray text line in the event stream.

Cost: a server under load writes a dozen lines per connection.  So the
chain is as short as it can be (:mod:`core.logchain`); loggers are cached
on first use; and the lines end in one :class:`LineWriter` per process.
Outside :func:`batched` it writes and flushes each line as it comes.  Inside
it (a trio program: the daemons, while they run) lines are gathered and
written together, in one ``write()``: when the event loop has run what was
ready (a callback queued with ``run_sync_soon``), and at the latest when the
oldest line is :data:`MAX_DELAY_S` old or :data:`MAX_LINES` are waiting —
well inside the runner's 150 ms reorder window.  Leaving the block flushes
(an exception, Ctrl-C, SIGTERM — the daemons handle it in trio and leave
normally — included), and so does the interpreter's exit.  Lines from
stdlib ``logging`` go through the same writer, so one process's lines stay
in the order they were logged.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal, TextIO

import structlog

from core.logchain import (
    add_logged_ts,
    bound_logger_class,
    foreign,
    json_line,
    render_json,
    reorder,
)

LogFormat = Literal["auto", "console", "json"]
FORMATS: tuple[LogFormat, ...] = ("auto", "console", "json")

MAX_DELAY_S = 0.005
"""Inside :func:`batched`: the longest a line waits to be written while the
event loop is busy."""
MAX_LINES = 2048
"""Inside :func:`batched`: this many waiting lines are written at once."""


class LineWriter:
    """The end of every chain: rendered lines to the stream, in order.

    structlog's logger (every method name writes one line) and the stdlib
    handler's target.  Thread-safe: a library may log from a worker thread.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.RLock()  # a signal handler may log mid-line
        self._lines: list[str] = []
        self._oldest = 0.0
        self._wake: Callable[[Callable[[], None]], object] | None = None
        self._scheduled = False
        self._error: BaseException | None = None

    def msg(self, message: str) -> None:
        wake = self._wake
        if wake is None:
            with self._lock:
                self._write([message])
            return
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        with self._lock:
            lines = self._lines
            lines.append(message)
            if len(lines) > 1:
                if len(lines) >= MAX_LINES or time.monotonic() - self._oldest >= MAX_DELAY_S:
                    self._flush_locked()
                return
            self._oldest = time.monotonic()
            if self._scheduled:
                return
            self._scheduled = True
        try:
            # once the event loop has run what is ready now
            wake(self._scheduled_flush)
        except RuntimeError:  # the trio run is over (RunFinishedError)
            with self._lock:
                self._scheduled = False
                self._flush_locked()

    log = debug = info = warn = warning = err = error = critical = exception = fatal = msg
    failure = msg

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            self._write(lines)

    def _write(self, lines: list[str]) -> None:
        lines.append("")
        self.out.write("\n".join(lines))
        self.out.flush()

    def _scheduled_flush(self) -> None:
        # runs as trio's run_sync_soon callback: an exception there would
        # take the whole run down; it is raised to the next caller instead
        try:
            with self._lock:
                self._scheduled = False
                self._flush_locked()
        except Exception as exc:
            self._error = exc

    def start_batching(self, wake: Callable[[Callable[[], None]], object]) -> None:
        with self._lock:
            self._wake = wake
            self._scheduled = False

    def stop_batching(self) -> None:
        with self._lock:
            self._wake = None
            self._flush_locked()


_writer: LineWriter | None = None
"""The writer of the last :func:`configure`."""


def flush() -> None:
    """Write every line still waiting (a no-op outside :func:`batched`)."""
    if _writer is not None:
        _writer.flush()


@atexit.register
def _flush_at_exit() -> None:
    with contextlib.suppress(Exception):
        flush()


@contextlib.contextmanager
def batched() -> Iterator[None]:
    """Inside ``trio.run``: gather the lines logged in the block and write
    them together (see the module's docstring); everything is written when
    the block is left, however it is left."""
    writer = _writer
    if writer is None:
        yield
        return
    import trio

    token = trio.lowlevel.current_trio_token()

    def wake(fn: Callable[[], None]) -> None:
        token.run_sync_soon(fn, idempotent=True)

    writer.start_batching(wake)
    try:
        yield
    finally:
        writer.stop_batching()


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
    format chosen.  Loggers are cached on first use: get them after this."""
    global _writer
    out = stream if stream is not None else sys.stdout
    chosen = resolve_format(fmt, out)
    if _writer is not None:
        with contextlib.suppress(Exception):
            _writer.stop_batching()
    writer = _writer = LineWriter(out)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        add_logged_ts,
    ]
    renderer: Any
    processors: list[Any]
    if chosen == "json":
        renderer = render_json
        processors = [json_line(component)]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_colour_ok(out))
        processors = [*shared, reorder, renderer]
    structlog.configure(
        processors=processors,
        wrapper_class=bound_logger_class(level),
        logger_factory=lambda *_args: writer,
        context_class=dict,
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(component=component)

    # stdlib loggers (trio, pyroute2) through the same chain and writer.
    handler = _WriterHandler(writer)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, foreign],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                reorder,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    return chosen


class _WriterHandler(logging.Handler):
    """A stdlib handler that hands its formatted lines to the writer."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.writer.msg(self.format(record))
        except Exception:
            self.handleError(record)


def _colour_ok(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def get_logger(**initial: Any) -> Any:
    """A bound structlog logger; ``initial`` fields go on every line.  It
    keeps the configuration in force when it is made (call
    :func:`configure` first)."""
    return structlog.get_logger(**initial).bind()
