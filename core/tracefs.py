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

It then opens every ``per_cpu/cpuN/trace_pipe_raw``: an instance is a
:class:`core.tracepipes.PipeReader`, which reads and decodes them (and
says what was measured of their readiness and their clock).

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
from core.tracepipes import PipeReader, page_bytes, wall_offset_ns

__all__ = [
    "TRACEFS_MOUNTS",
    "TRACE_PREFIX",
    "Instance",
    "TracefsError",
    "instance_names",
    "remove_instances",
    "root",
    "unavailable_reason",
    "wall_offset_ns",
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


class Instance(PipeReader):
    """A tracefs instance recording some events, and its open per-CPU pipes
    (read as a :class:`~core.tracepipes.PipeReader`).

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
        super().__init__(self.formats, layout, read_size)
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
        filters = _checked_filters(name, events, filters, buffer_kb)
        path = _make_instance_dir(name)
        instance: Instance | None = None
        try:
            _write(path / "trace_clock", clock)
            _write(path / "buffer_size_kb", str(buffer_kb))
            _write(path / "buffer_percent", "0")
            formats = _set_up_events(path, events, filters)
            layout, read_size = _page_layout(path)
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
            self._add_pipe(cpu, fd)
        if not self.fds:
            raise TracefsError(errno.ENODEV, f"no readable per-CPU pipe in {self.path}")

    # --- taking down -------------------------------------------------------------

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

    def __repr__(self) -> str:
        return f"Instance({self.name!r}, cpus={sorted(self.cpu_fds)})"


def _checked_filters(
    name: str, events: Sequence[str], filters: Mapping[str, str] | None, buffer_kb: int
) -> dict[str, str]:
    """:meth:`Instance.create`'s arguments checked (ValueError); its filters."""
    if not NAME_RE.match(name) or name in (".", ".."):
        raise ValueError(f"bad instance name {name!r} (letters, digits, _ . -)")
    for event in events:
        if not EVENT_RE.match(event):
            raise ValueError(f"bad event name {event!r} (want system/event)")
    checked = dict(filters or {})
    unknown = set(checked) - set(events)
    if unknown:
        raise ValueError(f"filters for events not enabled: {sorted(unknown)}")
    if buffer_kb <= 0:
        raise ValueError("buffer_kb must be positive")
    return checked


def _make_instance_dir(name: str) -> Path:
    """mkdir ``instances/<name>``; TracefsError if there is no tracefs or the
    instance exists."""
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
    return path


def _set_up_events(
    path: Path, events: Sequence[str], filters: Mapping[str, str]
) -> dict[int, tracebuf.EventFormat]:
    """Read each event's format in instance ``path`` and set its filter;
    the formats by event id."""
    formats: dict[int, tracebuf.EventFormat] = {}
    for event in events:
        try:
            fmt = tracebuf.parse_format(_read(path / "events" / event / "format"))
        except tracebuf.TraceDecodeError as exc:
            raise TracefsError(errno.EINVAL, f"{event}: {exc}") from exc
        formats[fmt.id] = fmt
        if event in filters:
            _write(path / "events" / event / "filter", filters[event])
    return formats


def _page_layout(path: Path) -> tuple[tracebuf.PageLayout, int]:
    """The page layout of instance ``path`` (``events/header_page``, else
    x86_64's) sized to one read, and that read's size."""
    try:
        layout = tracebuf.parse_header_page(_read(path / "events" / "header_page"))
    except (TracefsError, tracebuf.TraceDecodeError):
        layout = tracebuf.DEFAULT_LAYOUT
    read_size = page_bytes(path)
    if read_size != layout.page_size:
        layout = tracebuf.PageLayout(
            layout.timestamp_offset,
            layout.timestamp_size,
            layout.commit_offset,
            layout.commit_size,
            layout.data_offset,
            read_size - layout.data_offset,
        )
    return layout, read_size
