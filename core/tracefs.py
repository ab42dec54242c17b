"""The shell around :mod:`core.tracebuf`: a private ftrace instance under
tracefs that records the TCP tracepoints, and the per-CPU binary pipes it is
read through.

An *instance* (``instances/<name>``, made with mkdir) is a trace buffer of
its own with its own event switches, filters and clock, so tcplab never
touches the top-level buffer another tool may be using.
:meth:`Instance.create` sets it up:

- ``trace_clock`` = ``mono`` (``ktime_get_mono_fast_ns()``: CLOCK_MONOTONIC,
  the clock of :func:`time.monotonic_ns`, read NMI-safely);
- ``buffer_size_kb`` per CPU;
- ``buffer_percent`` = 0: a reader waiting in poll() wakes as soon as a CPU
  buffer is not empty (the default, 50, waits until it is half full);
- each event's ``filter``, then its ``enable``.

It opens every ``per_cpu/cpuN/trace_pipe_raw`` with O_NONBLOCK; :attr:`fds`
are for the caller to wait on (``select``/``poll``/``epoll`` or
``trio.lowlevel.wait_readable``): a pipe polls readable when its CPU buffer
holds an event.

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

    :meth:`Instance.read_available` reads each CPU until EAGAIN and repeats
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

Clean-up
    An instance lives until someone removes it; :func:`remove_instances`
    removes those a killed process left behind (they are named
    ``<prefix><something>``).  rmdir fails with EBUSY while a file in the
    instance is open, so :meth:`Instance.remove` closes the pipes first and
    retries briefly.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from core import tracebuf

__all__ = [
    "TRACEFS_MOUNTS",
    "Instance",
    "TracefsError",
    "remove_instances",
    "root",
    "unavailable_reason",
]

TRACEFS_MOUNTS: Final = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
NAME_RE: Final = re.compile(r"^[A-Za-z0-9_.-]+$")
EVENT_RE: Final = re.compile(r"^[A-Za-z0-9_]+/[A-Za-z0-9_]+$")
RMDIR_RETRY_S: Final = 2.0

TRACE_PREFIX = "tcplab-"
"""Every ftrace instance the lab makes is named with this prefix (``tcplab-<lab>-cli``,
``tcplab-watch-<pid>``), so ``tcplab clean`` finds those a killed run left."""


class TracefsError(OSError):
    """tracefs is missing, or an instance could not be made or set up."""


def _has_instances(path: Path) -> bool:
    try:
        return (path / "instances").is_dir()
    except OSError:
        return False


def _mount_tracefs(target: Path) -> bool:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    try:
        if libc.mount(b"nodev", bytes(target), b"tracefs", 0, None) != 0:
            return False
    except (OSError, AttributeError):
        return False
    return _has_instances(target)


def root() -> Path | None:
    """The tracefs mount (``/sys/kernel/tracing``, else the old
    ``/sys/kernel/debug/tracing``) if it has ``instances/``.  As root, mount
    tracefs at ``/sys/kernel/tracing`` when nothing is mounted.  None when
    there is none we can use."""
    for path in TRACEFS_MOUNTS:
        if _has_instances(path):
            return path
    if os.geteuid() != 0:
        return None
    target = TRACEFS_MOUNTS[0]
    try:
        if not target.is_dir():
            return None
    except OSError:
        return None
    return target if _mount_tracefs(target) else None


def unavailable_reason() -> str | None:
    """Why the TCP tracepoints cannot be recorded here; None if they can."""
    base = root()
    if base is None:
        if not any(_exists(path) for path in TRACEFS_MOUNTS):
            return "this kernel has no tracefs (/sys/kernel/tracing missing)"
        if os.geteuid() != 0:
            return "tracefs is not mounted or not readable, and only root may mount it"
        return "could not mount tracefs at /sys/kernel/tracing"
    if not os.access(base / "instances", os.W_OK | os.X_OK):
        return f"may not create trace instances in {base / 'instances'} (needs root)"
    for event in tracebuf.TCP_EVENTS:
        fmt = base / "events" / event / "format"
        try:
            fmt.read_bytes()
        except FileNotFoundError:
            return f"this kernel has no tracepoint {event.replace('/', ':')}"
        except OSError as exc:
            return f"cannot read {fmt}: {exc.strerror}"
    return None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return True


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except OSError as exc:
        raise TracefsError(exc.errno, f"writing {value!r} to {path}: {exc.strerror}") from exc


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        raise TracefsError(exc.errno, f"reading {path}: {exc.strerror}") from exc


def _cpu_dirs(path: Path) -> list[tuple[int, Path]]:
    cpus = []
    for entry in (path / "per_cpu").iterdir():
        if entry.name.startswith("cpu") and entry.name[3:].isdigit():
            cpus.append((int(entry.name[3:]), entry))
    return sorted(cpus)


def _rmdir_instance(path: Path) -> bool:
    """Disable every event of instance ``path`` and rmdir it, retrying
    while it is busy; True if it is gone."""
    with contextlib.suppress(OSError):
        (path / "events" / "enable").write_text("0")
    deadline = time.monotonic() + RMDIR_RETRY_S
    while True:
        try:
            path.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                return False
        time.sleep(0.02)


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


def instance_names(prefix: str) -> list[str]:
    """The instances whose name starts with ``prefix`` (none without tracefs)."""
    if not prefix or not NAME_RE.match(prefix):
        raise ValueError(f"bad instance name prefix {prefix!r}")
    base = root()
    if base is None:
        return []
    try:
        return sorted(p.name for p in (base / "instances").iterdir() if p.name.startswith(prefix))
    except OSError:
        return []


def remove_instances(prefix: str) -> list[str]:
    """Remove every instance whose name starts with ``prefix`` (what killed
    processes left behind); the names removed."""
    if not prefix or not NAME_RE.match(prefix):
        raise ValueError(f"bad instance name prefix {prefix!r}")
    base = root()
    if base is None:
        return []
    removed = []
    try:
        names = sorted(p.name for p in (base / "instances").iterdir())
    except OSError:
        return []
    for name in names:
        if name.startswith(prefix) and _rmdir_instance(base / "instances" / name):
            removed.append(name)
    return removed


class Instance:
    """A tracefs instance recording some events, and its open per-CPU pipes.

    Make one with :meth:`create`; :meth:`remove` (or leaving the ``with``
    block) takes it down again.
    """

    def __init__(
        self,
        name: str,
        path: Path,
        events: Sequence[str],
        formats: Mapping[int, tracebuf.EventFormat],
        layout: tracebuf.PageLayout,
        read_size: int,
    ) -> None:
        self.name = name
        self.path = path
        self.events = tuple(events)
        self.formats = dict(formats)
        self.layout = layout
        self.read_size = read_size
        """Bytes per read: one ring buffer page (sub-buffer)."""
        self.decoder = tracebuf.Decoder(self.formats)
        self.lost = 0
        """Events the kernel overwrote before we read them (a lower bound)."""
        self.malformed = 0
        """Pages or records that did not decode (should stay 0)."""
        self._fds: dict[int, int] = {}
        self._seq: dict[int, int] = {}
        self._partial: dict[int, bytes] = {}
        self._removed = False

    # --- making ----------------------------------------------------------------

    @classmethod
    def create(
        cls,
        name: str,
        *,
        events: Sequence[str] = tracebuf.TCP_EVENTS,
        filters: Mapping[str, str] | None = None,
        clock: str = "mono",
        buffer_kb: int = 1024,
    ) -> Instance:
        """Make ``instances/<name>`` recording ``events`` (``system/event``),
        each with its ``filters[event]`` if given, and open its pipes.
        Raises TracefsError (and leaves nothing behind) when that fails."""
        if not NAME_RE.match(name) or name in (".", ".."):
            raise ValueError(f"bad instance name {name!r} (letters, digits, _ . -)")
        for event in events:
            if not EVENT_RE.match(event):
                raise ValueError(f"bad event name {event!r} (want system/event)")
        filters = dict(filters or {})
        unknown = set(filters) - set(events)
        if unknown:
            raise ValueError(f"filters for events not enabled: {sorted(unknown)}")
        if buffer_kb <= 0:
            raise ValueError("buffer_kb must be positive")
        base = root()
        if base is None:
            raise TracefsError(errno.ENOENT, unavailable_reason() or "no tracefs")
        path = base / "instances" / name
        try:
            path.mkdir()
        except FileExistsError as exc:
            raise TracefsError(errno.EEXIST, f"trace instance {name!r} exists") from exc
        except OSError as exc:
            raise TracefsError(exc.errno, f"cannot make {path}: {exc.strerror}") from exc
        instance: Instance | None = None
        try:
            _write(path / "trace_clock", clock)
            _write(path / "buffer_size_kb", str(buffer_kb))
            _write(path / "buffer_percent", "0")
            formats: dict[int, tracebuf.EventFormat] = {}
            for event in events:
                try:
                    fmt = tracebuf.parse_format(_read(path / "events" / event / "format"))
                except tracebuf.TraceDecodeError as exc:
                    raise TracefsError(errno.EINVAL, f"{event}: {exc}") from exc
                formats[fmt.id] = fmt
                if event in filters:
                    _write(path / "events" / event / "filter", filters[event])
            try:
                layout = tracebuf.parse_header_page(_read(path / "events" / "header_page"))
            except (TracefsError, tracebuf.TraceDecodeError):
                layout = tracebuf.DEFAULT_LAYOUT
            read_size = _page_bytes(path)
            if read_size != layout.page_size:
                layout = tracebuf.PageLayout(
                    layout.timestamp_offset,
                    layout.timestamp_size,
                    layout.commit_offset,
                    layout.commit_size,
                    layout.data_offset,
                    read_size - layout.data_offset,
                )
            try:
                instance = cls(name, path, events, formats, layout, read_size)
            except tracebuf.TraceDecodeError as exc:  # a format without a needed field
                raise TracefsError(errno.EINVAL, str(exc)) from exc
            instance._open_pipes()
            for event in events:
                _write(path / "events" / event / "enable", "1")
            return instance
        except BaseException:
            with contextlib.suppress(OSError):
                if instance is not None:
                    instance.remove()
                else:
                    _rmdir_instance(path)
            raise

    def _open_pipes(self) -> None:
        for cpu, cpu_dir in _cpu_dirs(self.path):
            try:
                fd = os.open(cpu_dir / "trace_pipe_raw", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                if exc.errno == errno.ENODEV:
                    continue
                raise TracefsError(exc.errno, f"opening {cpu_dir}: {exc.strerror}") from exc
            self._fds[cpu] = fd
            self._seq[cpu] = 0
            # Nothing is enabled yet: this read finds EAGAIN, or ENODEV for a
            # CPU that never came online (dropped: it would poll ready forever).
            self._read_cpu(cpu, [])
        if not self._fds:
            raise TracefsError(errno.ENODEV, f"no readable per-CPU pipe in {self.path}")

    # --- reading -------------------------------------------------------------------

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

    # --- taking down -------------------------------------------------------------

    def close(self) -> None:
        """Close the pipes (idempotent)."""
        for cpu in list(self._fds):
            self._drop(cpu)

    def remove(self) -> None:
        """Close the pipes, disable the events and remove the instance
        (idempotent; raises TracefsError if it stays busy)."""
        self.close()
        if self._removed:
            return
        for event in self.events:
            with contextlib.suppress(OSError):
                (self.path / "events" / event / "enable").write_text("0")
        if not _rmdir_instance(self.path):
            raise TracefsError(errno.EBUSY, f"could not remove trace instance {self.path}")
        self._removed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()

    def __del__(self) -> None:
        # Do not leak descriptors (a leaked one keeps the instance busy).
        with contextlib.suppress(Exception):
            self.close()

    def __repr__(self) -> str:
        return f"Instance({self.name!r}, cpus={sorted(self._fds)})"


def _page_bytes(path: Path) -> int:
    """The size of one read: the instance's sub-buffer (``buffer_subbuf_size_kb``,
    6.8+; the system page unless someone changed it), else the system page."""
    try:
        return int((path / "buffer_subbuf_size_kb").read_text().strip()) * 1024
    except (OSError, ValueError):
        return os.sysconf("SC_PAGE_SIZE")
