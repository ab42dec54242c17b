"""Decode the Linux ftrace ring buffer: the binary pages that
``per_cpu/cpuN/trace_pipe_raw`` hands out, into raw records.

Why binary: the text ``trace_pipe`` prints microsecond timestamps and leaves
fields out (see :mod:`core.tracepoints`); nanoseconds keep events of one
connection in order.

This module is pure: bytes in, dataclasses out; no I/O, no clock.
:mod:`core.tracefs` is the shell that gets the bytes.  What the records mean
is decided elsewhere: :mod:`core.traceformat` reads the kernel's
descriptions (event formats, the page header), :mod:`core.tracepoints`
decodes the TCP tracepoints.  Their names are importable from here too, so
``tracebuf`` stays the one name for the whole codec.

Pages (``events/header_page``; kernel/trace/ring_buffer.c)
    A page is ``struct buffer_data_page``: a u64 ``time_stamp``, a ``local_t
    commit`` (bytes of data committed) and ``data``, where
    :class:`~core.traceformat.PageLayout` says.  ``ring_buffer_read_page()``
    flags a page that follows lost events in the commit word:
    ``RB_MISSED_EVENTS`` (1 << 31), and ``RB_MISSED_STORED`` (1 << 30) when
    it also wrote the number of lost events (an ``unsigned long``) right
    after the committed data.  The rest of the page is zeroed.  The flags
    are ``int`` constants added to a ``long``, so a page with
    ``RB_MISSED_EVENTS`` has the top half of its 64-bit commit set as well:
    only the low 32 bits count.  Multi-byte values are little-endian
    (x86_64, arm64).

Entries (``events/header_event``, ``struct ring_buffer_event``)
    Each entry starts with a u32: ``type_len`` in the low 5 bits, a 27-bit
    ``time_delta`` (ns for the ``mono`` clock) above it, then ``array[]``:

    ``1..28`` (``RINGBUF_TYPE_DATA_TYPE_LEN_MAX``)
        data of ``type_len * 4`` bytes right after the header.
    ``0``
        a bigger record: ``array[0]`` is its length *counting array[0]
        itself* (``rb_event_data_length()`` is ``array[0] + 4`` for the whole
        entry), data follows at offset 8.  Checked on real pages: a
        180-character ``trace_marker`` write is a 198-byte ``ftrace:print``
        record, padded to 200, and its entry has ``array[0] == 204``.
        x86_64 uses this for records over 112 bytes (``RB_MAX_SMALL_DATA``).
    ``29`` (``RINGBUF_TYPE_PADDING``)
        with ``time_delta == 0`` the rest of the page is unused (the "null"
        event that ends a page); otherwise a discarded event or a page's
        padded tail of ``array[0] + 4`` bytes.  A discarded event's delta
        still moved the writer's clock, so it is added (but the kernel writes
        1 when the delta was 0, so 1 is not; as ``rb_read_data_buffer()``).
    ``30`` (``RINGBUF_TYPE_TIME_EXTEND``)
        8 bytes: add ``array[0] << 27 | time_delta`` (``TS_SHIFT``) to the
        running time: deltas too big for 27 bits (~134 ms) need one.
    ``31`` (``RINGBUF_TYPE_TIME_STAMP``)
        8 bytes: an absolute time, ``array[0] << 27 | time_delta``, 59 bits:
        ``rb_fix_abs_ts()`` puts back the top 5 bits (``TS_MSB``) from the
        running time (the page's ``time_stamp`` onwards).  Buffers in absolute
        mode (hist triggers) write one before every event; others, when an
        event interrupted another one's reservation (seen on real pages:
        about one page in 150 while interrupts were traced during a flood
        of ``trace_marker`` writes).

    An event's time is the page's ``time_stamp`` plus the deltas of every
    entry up to and including its own.

Anything malformed raises :class:`TraceDecodeError` (a ValueError) and
nothing else.

All of the above was checked on pages captured from 6.18 against the
kernel's own text rendering of the same buffer (tests/fixtures/trace/): to
the microsecond for the ``mono`` clock, to the nanosecond for ``x86-tsc``.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from core.traceformat import (
    DEFAULT_LAYOUT,
    EventFormat,
    Field,
    PageLayout,
    RawEvent,
    TraceDecodeError,
    parse_format,
    parse_header_page,
)
from core.tracepoints import (
    EVENT_KINDS,
    SK_RST_REASONS,
    TCP_EVENTS,
    Decoder,
    Kind,
    TraceEvent,
    ipv4_filter_literal,
    merge,
)

__all__ = [
    "DEFAULT_LAYOUT",
    "EVENT_KINDS",
    "RB_MISSED_EVENTS",
    "RB_MISSED_STORED",
    "SK_RST_REASONS",
    "TCP_EVENTS",
    "Decoder",
    "EventFormat",
    "Field",
    "Kind",
    "PageEvents",
    "PageLayout",
    "RawEvent",
    "TraceDecodeError",
    "TraceEvent",
    "fix_abs_ts",
    "ipv4_filter_literal",
    "merge",
    "parse_format",
    "parse_header_page",
    "parse_page",
]


# --- kernel constants -----------------------------------------------------------

# kernel/trace/ring_buffer.c (and include/linux/ring_buffer.h for the types)
RB_MISSED_EVENTS: Final = 1 << 31
"""commit flag: events were lost (overwritten) before this page."""
RB_MISSED_STORED: Final = 1 << 30
"""commit flag: the number lost is stored after the data (an unsigned long)."""
RB_MISSED_MASK: Final = RB_MISSED_EVENTS | RB_MISSED_STORED

RINGBUF_TYPE_DATA_TYPE_LEN_MAX: Final = 28
RINGBUF_TYPE_PADDING: Final = 29
RINGBUF_TYPE_TIME_EXTEND: Final = 30
RINGBUF_TYPE_TIME_STAMP: Final = 31
RB_ALIGNMENT: Final = 4
RB_EVNT_HDR_SIZE: Final = 4
RB_LEN_TIME_EXTEND: Final = 8
TS_SHIFT: Final = 27
TS_MSB: Final = 0xF8 << 56
"""The 5 bits an absolute time stamp entry cannot hold."""
_U64: Final = (1 << 64) - 1


# --- pages ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class PageEvents:
    """What one page held."""

    cpu: int
    timestamp: int
    """The page's ``time_stamp``: the base of its first delta."""
    events: tuple[RawEvent, ...]
    size: int
    """Committed data bytes (flags removed)."""
    missed: bool
    """Events were lost before this page (``RB_MISSED_EVENTS``)."""
    missed_count: int | None
    """How many, when the kernel had room to store it; 0 when none were lost."""
    extends: int = 0
    """Time-extend entries on the page."""
    stamps: int = 0
    """Absolute time stamp entries on the page."""


def fix_abs_ts(abs_ts: int, save_ts: int) -> int:
    """``rb_fix_abs_ts()``: give a 59-bit absolute time stamp the top bits of
    the running time ``save_ts``, carrying if those bits just ticked."""
    if save_ts & TS_MSB:
        abs_ts |= save_ts & TS_MSB
        if abs_ts < save_ts:
            abs_ts += 1 << 59
    return abs_ts & _U64


def parse_page(
    page: bytes | bytearray | memoryview,
    cpu: int,
    layout: PageLayout = DEFAULT_LAYOUT,
    *,
    seq: int = 0,
) -> PageEvents:
    """Decode one page read from ``trace_pipe_raw``; ``seq`` numbers the
    first event (the caller keeps counting per CPU)."""
    buf = bytes(page)
    header = _page_header(buf, layout)
    entries = _Entries(
        memoryview(buf)[layout.data_offset : layout.data_offset + header.size],
        cpu=cpu,
        ts=header.timestamp,
        seq=seq,
    )
    pos = 0
    while pos < entries.size:
        if entries.size - pos < RB_EVNT_HDR_SIZE:
            raise TraceDecodeError(f"entry header cut at data offset {pos}")
        word = int.from_bytes(entries.data[pos : pos + 4], "little")
        type_len = word & 0x1F
        delta = word >> 5
        if type_len == RINGBUF_TYPE_PADDING:
            pos = entries.padding(pos, delta)
        elif type_len == RINGBUF_TYPE_TIME_EXTEND:
            pos = entries.time_extend(pos, delta)
        elif type_len == RINGBUF_TYPE_TIME_STAMP:
            pos = entries.time_stamp(pos, delta)
        else:
            pos = entries.record(pos, type_len, delta)
    return PageEvents(
        cpu=cpu,
        timestamp=header.timestamp,
        events=tuple(entries.events),
        size=header.size,
        missed=header.missed,
        missed_count=header.missed_count,
        extends=entries.extends,
        stamps=entries.stamps,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _PageHeader:
    """A page's ``struct buffer_data_page`` header, its commit word taken apart."""

    timestamp: int
    size: int
    missed: bool
    missed_count: int | None


def _page_header(buf: bytes, layout: PageLayout) -> _PageHeader:
    """Read and check the header of page ``buf``."""
    end_hdr = max(
        layout.timestamp_offset + layout.timestamp_size,
        layout.commit_offset + layout.commit_size,
        layout.data_offset,
    )
    if len(buf) < end_hdr:
        raise TraceDecodeError(f"page of {len(buf)} bytes is shorter than its header")
    timestamp = _u(buf, layout.timestamp_offset, layout.timestamp_size)
    # The flags are ``int`` constants added to a ``long``: 1 << 31 is
    # negative, so a flagged 64-bit commit has its top 32 bits set too (seen
    # on real pages: 0xffffffffc0000f54).  Only the low 32 bits mean anything.
    commit = _u(buf, layout.commit_offset, layout.commit_size) & 0xFFFFFFFF
    flags = commit & RB_MISSED_MASK
    size = commit & ~RB_MISSED_MASK
    room = len(buf) - layout.data_offset
    if size > layout.data_size or size > room:
        raise TraceDecodeError(
            f"commit {size} exceeds the page ({min(room, layout.data_size)} data bytes)"
        )
    missed = bool(flags)
    missed_count: int | None = None if missed else 0
    if flags & RB_MISSED_STORED:
        where = layout.data_offset + size
        if where + layout.commit_size > len(buf):
            raise TraceDecodeError("page cut before its stored missed-events count")
        missed_count = _u(buf, where, layout.commit_size)
    return _PageHeader(timestamp, size, missed, missed_count)


class _Entries:
    """One page's committed data, walked entry by entry: each method reads
    the entry at ``pos`` (its header word already split into ``type_len``
    and ``delta``), moves the running time, and returns where the next
    entry starts."""

    __slots__ = ("cpu", "data", "events", "extends", "seq", "size", "stamps", "ts")

    def __init__(self, data: memoryview, *, cpu: int, ts: int, seq: int) -> None:
        self.data = data
        self.size = len(data)
        self.cpu = cpu
        self.ts = ts
        """The running time: the page's ``time_stamp`` plus the deltas so far."""
        self.seq = seq
        self.events: list[RawEvent] = []
        self.extends = 0
        self.stamps = 0

    def padding(self, pos: int, delta: int) -> int:
        """``RINGBUF_TYPE_PADDING``: the null event that ends the page
        (``delta`` 0), else a discarded event or the page's padded tail."""
        if delta == 0:
            return self.size  # the null event: nothing more on this page
        if self.size - pos < 8:
            raise TraceDecodeError(f"padding entry cut at data offset {pos}")
        length = int.from_bytes(self.data[pos + 4 : pos + 8], "little") + RB_EVNT_HDR_SIZE
        if length < 8:
            raise TraceDecodeError(f"padding of {length} bytes at data offset {pos}")
        if delta != 1:
            self.ts = (self.ts + delta) & _U64
        return pos + length  # may run past the commit: the page's padded tail

    def time_extend(self, pos: int, delta: int) -> int:
        """``RINGBUF_TYPE_TIME_EXTEND``: a delta too big for the header word."""
        self.ts = (self.ts + self._time_value(pos, delta)) & _U64
        self.extends += 1
        return pos + RB_LEN_TIME_EXTEND

    def time_stamp(self, pos: int, delta: int) -> int:
        """``RINGBUF_TYPE_TIME_STAMP``: an absolute time, short of its top bits."""
        self.ts = fix_abs_ts(self._time_value(pos, delta), self.ts)
        self.stamps += 1
        return pos + RB_LEN_TIME_EXTEND

    def _time_value(self, pos: int, delta: int) -> int:
        """A time entry's value: ``array[0] << TS_SHIFT | time_delta``."""
        if self.size - pos < RB_LEN_TIME_EXTEND:
            raise TraceDecodeError(f"time entry cut at data offset {pos}")
        return (int.from_bytes(self.data[pos + 4 : pos + 8], "little") << TS_SHIFT) | delta

    def record(self, pos: int, type_len: int, delta: int) -> int:
        """A data entry: ``type_len * 4`` bytes, or (``type_len`` 0) as many
        as ``array[0]`` says; one :class:`RawEvent`."""
        if type_len == 0:
            if self.size - pos < 8:
                raise TraceDecodeError(f"long entry header cut at data offset {pos}")
            counted = int.from_bytes(self.data[pos + 4 : pos + 8], "little")
            if counted < 4:
                raise TraceDecodeError(f"long entry of length {counted} at data offset {pos}")
            start = pos + 8
            stop = pos + RB_EVNT_HDR_SIZE + counted
        else:
            start = pos + RB_EVNT_HDR_SIZE
            stop = start + type_len * RB_ALIGNMENT
        if stop > self.size:
            raise TraceDecodeError(
                f"entry at data offset {pos} ends at {stop}, past the commit {self.size}"
            )
        self.ts = (self.ts + delta) & _U64
        self.events.append(
            RawEvent(cpu=self.cpu, ts=self.ts, data=bytes(self.data[start:stop]), seq=self.seq)
        )
        self.seq += 1
        return stop


def _u(buf: bytes | memoryview, offset: int, size: int) -> int:
    return int.from_bytes(buf[offset : offset + size], "little")
