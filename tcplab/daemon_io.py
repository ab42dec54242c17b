"""The lab's daemons as child processes under trio: started, their event
lines read as they come, their readiness and exit noticed.

Which daemons a run starts, in what order, and when they are stopped is the
runner's (:mod:`tcplab.runner`); here is only how one is run.  Each is a
process (``python -m daemons.server``…) whose stdout and stderr are read
line by line: the event lines are the interface, so nothing of the daemons
is imported.  Every line goes to the run's :class:`Gatherer`, which keeps
it as a typed record (:mod:`core.events`) or as stray text and hands the
records on in causal order.
"""

from __future__ import annotations

import math
import subprocess
import time
from collections.abc import Callable

import trio

from core import events
from core.events import DaemonReady, Record
from core.proc import child_env as proc_child_env
from tcplab import causality
from tcplab.causality import Placed
from tcplab.transcript import REORDER_WINDOW_S, Merger


class Daemon:
    """A daemon process; ``ready`` once it says so, ``exited`` once it has
    exited and all its lines are read."""

    def __init__(self, name: str, proc: trio.Process) -> None:
        self.name = name
        self.proc = proc
        self.ready = trio.Event()
        self.exited = trio.Event()


class DueTimer:
    """Sleeps until a :class:`Merger`'s oldest record is due, and no longer:
    a record pushed meanwhile that is due sooner (one from another process
    with an earlier ``ts``) wakes it early.  A fixed tick would add up to a
    tick to every record's wait; this adds nothing."""

    IDLE_S = 1.0
    """With nothing held, how long one :meth:`wait` lasts at most."""

    def __init__(self, merger: Merger) -> None:
        self.merger = merger
        self._until = math.inf
        self._sooner = trio.Event()

    def pushed(self, record: Record) -> None:
        """``record`` was just pushed to the merger."""
        if causality.position(record) + self.merger.window < self._until:
            self._sooner.set()

    async def wait(self) -> None:
        """Return once something may be due (or after :data:`IDLE_S`)."""
        due = self.merger.next_due()
        self._until = math.inf if due is None else due
        self._sooner = trio.Event()
        delay = self.IDLE_S if due is None else due - time.time()
        if delay > 0:
            with trio.move_on_after(delay):
                await self._sooner.wait()
        self._until = -math.inf  # not sleeping: no push needs to wake it


class Gatherer:
    """Every daemon's lines in one run: records kept in the order they
    arrived (each daemon's own in the order it logged them), the lines that
    are not records (tracebacks, warnings) kept as ``stray``.  ``on_event``
    gets the records in causal order: they are held for a short window so
    one from another process with an earlier ``ts``, or a poll that reports
    a cause late, can overtake."""

    def __init__(
        self, on_event: Callable[[Placed], None] | None, window: float = REORDER_WINDOW_S
    ) -> None:
        self.on_event = on_event
        self.records: list[Record] = []
        self.stray: list[str] = []
        self.merger = Merger(window)
        self.timer = DueTimer(self.merger)

    def deliver(self, final: bool = False) -> None:
        """Hand ``on_event`` the records held long enough (``final``: all)."""
        ready = self.merger.drain() if final else self.merger.pop_ready(time.time())
        if self.on_event is not None:
            for event in ready:
                self.on_event(event)

    async def ticker(self) -> None:
        """Deliver each record as soon as its window has passed."""
        while True:
            await self.timer.wait()
            self.deliver()

    def sink(self, who: Daemon | None, name: str) -> Callable[[bytes], None]:
        """What to do with each line from daemon ``name``; ``who`` (given for
        its stdout, where records come) is ready when it says so."""

        def sink(raw: bytes) -> None:
            record = events.parse_record(raw)
            if record is None:
                text = raw.decode(errors="replace").rstrip()
                if text:
                    self.stray.append(f"{name}: {text}")
                return
            self.records.append(record)
            self.merger.push(record)
            self.timer.pushed(record)
            if who is not None and isinstance(record, DaemonReady):
                who.ready.set()

        return sink


async def start_daemon(
    name: str, argv: list[str], nursery: trio.Nursery, gatherer: Gatherer
) -> Daemon:
    """Start ``argv``; its lines go to ``gatherer``, read in ``nursery``
    until it exits."""
    proc = await trio.lowlevel.open_process(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=proc_child_env(),  # the daemons die with this process
    )
    handle = Daemon(name, proc)
    stdout, stderr = proc.stdout, proc.stderr
    assert stdout is not None and stderr is not None
    nursery.start_soon(_pump, handle, stdout, stderr, gatherer)
    return handle


async def _pump(
    handle: Daemon,
    stdout: trio.abc.ReceiveStream,
    stderr: trio.abc.ReceiveStream,
    gatherer: Gatherer,
) -> None:
    async with trio.open_nursery() as inner:
        inner.start_soon(read_lines, stdout, gatherer.sink(handle, handle.name))
        inner.start_soon(read_lines, stderr, gatherer.sink(None, handle.name))
    await handle.proc.wait()
    handle.exited.set()


async def read_lines(
    stream: trio.abc.ReceiveStream,
    on_line: Callable[[bytes], None],
) -> None:
    """Each line of ``stream`` (without its newline), and a last one
    without a newline if the stream ends so."""
    buf = bytearray()
    async for chunk in stream:
        buf += chunk
        while True:
            end = buf.find(b"\n")
            if end < 0:
                break
            on_line(bytes(buf[:end]))
            del buf[: end + 1]
    if buf:
        on_line(bytes(buf))


async def first_of(*flags: trio.Event) -> None:
    """Return when any of ``flags`` is set."""
    async with trio.open_nursery() as nursery:
        for flag in flags:

            async def waiter(flag: trio.Event = flag) -> None:
                await flag.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(waiter)
