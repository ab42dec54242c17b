"""Reading a trace instance: its per-CPU binary pipes
(``per_cpu/cpuN/trace_pipe_raw``), the pages they hand out decoded by
:mod:`core.tracebuf`, and the clock their time stamps are in.

:class:`PipeReader` holds the open pipes, reads them without blocking and
counts what was lost; :class:`core.tracefs.Instance` is one, and adds
making and removing the instance they belong to.  Every pipe is opened with
O_NONBLOCK; :attr:`PipeReader.fds` are for the caller to wait on
(``select``/``poll``/``epoll`` or ``trio.lowlevel.wait_readable``): a pipe
polls readable when its CPU buffer holds an event.

Measured on 6.18 (2-vCPU VM; tests/fixtures/trace/probe.py, 200 tries each)
    Readiness works with ``buffer_percent`` 0, for select() and epoll alike:
    from an event's time stamp to the wait returning took p50 ~0.19 ms and
    p99 ~2.5-3.1 ms, the same as a plain pipe written by the process that
    made the event (p50 0.18 ms, p99 3.0 ms): the machine's wake-up cost, not
    the tracer's.  The kernel wakes readers from an irq_work queued at
    commit, so the wait can even return before the syscall that made the
    event has.  No need for blocking reads in a thread.

    The ``mono`` clock is ``time.monotonic_ns()``'s: events triggered
    between two monotonic_ns() calls in one thread always fell between them
    (connect(): 5-27 µs after the first, p99; a ``trace_marker`` write
    brackets the offset to [-1.2, +0.6] µs, the cost of the write syscall).

Reading (kernel/trace/trace.c, ``tracing_buffers_read()``)
    Each read hands out one page (a ring buffer sub-buffer,
    ``buffer_subbuf_size_kb``, normally the 4 KiB system page), so reads ask
    for exactly that many bytes.  A read of a page-sized buffer returns the
    whole page (zero-filled past the data), also when the writer is still on
    it: then the kernel copies out the events committed so far.  Smaller
    reads get the same page in pieces, and only the events that fit the
    count, so a read smaller than a page is never used here: once no
    event fits, such reads return 0 forever (tried on 6.18: 100-byte reads
    gave one page holding only the 28-byte event as 40 x 100 + 96 bytes,
    then 0, 0, ... behind a 208-byte event).  So a short read only ever
    means "the rest of a page comes next"; 0 means "not empty, but nothing
    fits".  EAGAIN: the CPU buffer is empty.

    :meth:`PipeReader.read_available` reads each CPU until EAGAIN and repeats
    whole passes until one pass reads nothing: an event committed on CPU 0
    just after CPU 0 was read may be older than one read from CPU 1, and the
    next pass picks it up.  Then it decodes and merges by time.  Events
    committed after the call returns come with the next call; they can be
    older than the newest event already returned.

Lost events
    The buffer overwrites its oldest page when full; the next page read then
    carries ``RB_MISSED_EVENTS`` (see :mod:`core.tracebuf`).  :attr:`lost`
    adds up the counts (one where the kernel could not store the count).

CPUs
    ``per_cpu/`` has a directory for every *possible* CPU.  A CPU that has
    been online keeps its buffer while offline (it gets no new events but its
    pipe still reads).  A CPU that was never online has no buffer: its pipe
    opens, reads fail with ENODEV and poll() reports it ready (EPOLLERR) all
    the time, so the pipe is closed and left out of :attr:`fds` at the first
    such read (from kernel/trace/ring_buffer.c; not tried, as the CPUs of the
    test machine were all online).
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Mapping
from pathlib import Path

from core import tracebuf

__all__ = ["PipeReader", "page_bytes", "wall_offset_ns"]


class PipeReader:
    """A trace instance's open per-CPU pipes: read them, decode what they
    hold, count what was lost.  The pipes are handed over one by one
    (:meth:`_add_pipe`) by whoever opened them."""

    def __init__(
        self,
        formats: Mapping[int, tracebuf.EventFormat],
        layout: tracebuf.PageLayout,
        read_size: int,
    ) -> None:
        self.layout = layout
        self.read_size = read_size
        """Bytes per read: one ring buffer page (sub-buffer)."""
        self.decoder = tracebuf.Decoder(formats)
        self.lost = 0
        """Events the kernel overwrote before we read them (a lower bound)."""
        self.malformed = 0
        """Pages or records that did not decode (should stay 0)."""
        self._fds: dict[int, int] = {}
        self._seq: dict[int, int] = {}
        self._partial: dict[int, bytes] = {}

    def _add_pipe(self, cpu: int, fd: int) -> None:
        """Take over ``fd``, the open pipe of CPU ``cpu``."""
        self._fds[cpu] = fd
        self._seq[cpu] = 0
        # Nothing is enabled yet: this read finds EAGAIN, or ENODEV for a
        # CPU that never came online (dropped: it would poll ready forever).
        self._read_cpu(cpu, [])

    @property
    def fds(self) -> tuple[int, ...]:
        """The open ``trace_pipe_raw`` descriptors, to wait for readability."""
        return tuple(self._fds.values())

    @property
    def cpu_fds(self) -> Mapping[int, int]:
        """CPU number -> its pipe's descriptor."""
        return dict(self._fds)

    def _read_cpu(self, cpu: int, out: list[tracebuf.RawEvent]) -> int:
        """Read one CPU's pipe until EAGAIN; the number of pages read."""
        fd = self._fds[cpu]
        pages = 0
        while True:
            try:
                chunk = os.read(fd, self.read_size - len(self._partial.get(cpu, b"")))
            except BlockingIOError:
                return pages
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    self._drop(cpu)
                    return pages
                raise
            if not chunk:
                # The buffer is not empty but nothing fits our read: cannot
                # happen with page-sized reads (every event fits a page).
                return pages
            page = self._partial.pop(cpu, b"") + chunk
            if len(page) < self.read_size:
                self._partial[cpu] = page  # the rest of this page comes next
                continue
            pages += 1
            try:
                parsed = tracebuf.parse_page(page, cpu, self.layout, seq=self._seq[cpu])
            except tracebuf.TraceDecodeError:
                self.malformed += 1
                continue
            self._seq[cpu] += len(parsed.events)
            if parsed.missed:
                self.lost += parsed.missed_count or 1
            out.extend(parsed.events)

    def _drop(self, cpu: int) -> None:
        fd = self._fds.pop(cpu, None)
        if fd is not None:
            os.close(fd)

    def read_raw(self, max_passes: int = 16) -> list[tracebuf.RawEvent]:
        """Every record now readable, CPU by CPU (not merged), reading whole
        passes over the CPUs until one reads nothing (at most ``max_passes``
        when writers keep up with us)."""
        out: list[tracebuf.RawEvent] = []
        for _ in range(max_passes):
            pages = 0
            for cpu in list(self._fds):
                pages += self._read_cpu(cpu, out)
            if not pages:
                break
        return out

    def read_available(self, max_passes: int = 16) -> list[tracebuf.TraceEvent]:
        """Every TCP event now readable, decoded, in time order."""
        decoded = []
        for raw in self.read_raw(max_passes):
            try:
                event = self.decoder.decode(raw)
            except tracebuf.TraceDecodeError:
                self.malformed += 1
                continue
            if event is not None:
                decoded.append(event)
        return tracebuf.merge(decoded)

    def close(self) -> None:
        """Close the pipes (idempotent)."""
        for cpu in list(self._fds):
            self._drop(cpu)

    def __del__(self) -> None:
        # Do not leak descriptors (a leaked one keeps the instance busy).
        with contextlib.suppress(Exception):
            self.close()


def page_bytes(path: Path) -> int:
    """The size of one read: the instance's sub-buffer (``buffer_subbuf_size_kb``,
    6.8+; the system page unless someone changed it), else the system page."""
    try:
        return int((path / "buffer_subbuf_size_kb").read_text().strip()) * 1024
    except (OSError, ValueError):
        return os.sysconf("SC_PAGE_SIZE")


def wall_offset_ns(samples: int = 20) -> int:
    """CLOCK_REALTIME − CLOCK_MONOTONIC, in ns: add it to a ``mono`` trace
    timestamp to get the wall clock every record uses.  Each sample reads
    the wall clock between two monotonic reads; the one with the closest
    pair wins (a single pair can be off by microseconds: the first read after
    a sleep is slow)."""
    best: tuple[int, int] | None = None
    for _ in range(samples):
        before = time.monotonic_ns()
        wall = time.time_ns()
        after = time.monotonic_ns()
        if best is None or after - before < best[0]:
            best = (after - before, wall - (before + after) // 2)
    assert best is not None
    return best[1]
