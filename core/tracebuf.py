"""Decode the Linux ftrace ring buffer: the binary pages that
``per_cpu/cpuN/trace_pipe_raw`` hands out, and the TCP tracepoints in them.

Why binary: the text ``trace_pipe`` prints ``sock:inet_sock_set_state``
without its ``skaddr`` and with microsecond timestamps.  The socket address is
the only thing that ties the ``CLOSE -> SYN_SENT`` event (printed with
``sport=0``: connect() picks the port *after* the state change) to the rest of
its connection, and nanoseconds keep events of one connection in order.

This module is pure: bytes and text in, dataclasses out; no I/O, no clock.
:mod:`core.tracefs` is the shell that gets the bytes.

Formats (``events/SYSTEM/EVENT/format``)
    :func:`parse_format` reads an event's field table (name, offset, size,
    signedness, array length) and its ``print fmt``; the record of an event
    starts with the common fields (``common_type`` is the event id).

Pages (``events/header_page``; kernel/trace/ring_buffer.c)
    A page is ``struct buffer_data_page``: a u64 ``time_stamp``, a ``local_t
    commit`` (bytes of data committed) and ``data``.  :func:`parse_header_page`
    reads the offsets; :data:`DEFAULT_LAYOUT` is x86_64's (timestamp at 0,
    commit at 8, data at 16).  ``ring_buffer_read_page()`` flags a page that
    follows lost events in the commit word: ``RB_MISSED_EVENTS`` (1 << 31),
    and ``RB_MISSED_STORED`` (1 << 30) when it also wrote the number of lost
    events (an ``unsigned long``) right after the committed data.  The rest of
    the page is zeroed.  The flags are ``int`` constants added to a ``long``,
    so a page with ``RB_MISSED_EVENTS`` has the top half of its 64-bit commit
    set as well: only the low 32 bits count.  Multi-byte values are
    little-endian (x86_64, arm64).

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

Tracepoints (include/trace/events/sock.h, include/trace/events/tcp.h)
    :class:`Decoder` turns records of ``sock:inet_sock_set_state``,
    ``tcp:tcp_retransmit_skb``, ``tcp:tcp_retransmit_synack``,
    ``tcp:tcp_send_reset`` and ``tcp:tcp_receive_reset`` into
    :class:`TraceEvent`, locating every field through the format files, so a
    kernel that moves fields around still decodes.  Ports are host-order
    ``__u16`` (the tracepoints ``ntohs()`` them); addresses are the 4-byte
    ``saddr``/``daddr`` for ``AF_INET`` and ``saddr_v6``/``daddr_v6`` for
    ``AF_INET6``.  ``tcp_send_reset`` instead stores whole ``struct
    sockaddr_in``/``sockaddr_in6`` in ``saddr[28]``/``daddr[28]`` (family in
    host order, port in network order).

Anything malformed raises :class:`TraceDecodeError` (a ValueError) and
nothing else.

All of the above was checked on pages captured from 6.18 against the
kernel's own text rendering of the same buffer (tests/fixtures/trace/): to
the microsecond for the ``mono`` clock, to the nanosecond for ``x86-tsc``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from typing import Final, Literal

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


class TraceDecodeError(ValueError):
    """Input that is not what the kernel writes: truncated, bogus lengths."""


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

AF_INET: Final = 2
AF_INET6: Final = 10
IPPROTO_TCP: Final = 6


# --- event formats ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """One field of an event record, as the ``format`` file describes it."""

    name: str
    type: str
    """The C type as printed, without the name: ``__u8``, ``const void *``."""
    offset: int
    size: int
    signed: bool
    is_array: bool = False
    array_len: int | None = None
    """Element count for ``name[N]``; 0 for ``name[]``; None for scalars."""


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class EventFormat:
    """An event's ``format`` file: its id (the records' ``common_type``), its
    fields by name, and the ``print fmt`` the text output uses."""

    name: str
    id: int
    fields: Mapping[str, Field]
    print_fmt: str = ""

    def symbols(self, field: str) -> dict[int, str]:
        """The numeric ``__print_symbolic(REC->field, { N, "NAME" }, ...)``
        table of the print fmt (entries with symbolic keys are skipped)."""
        start = self.print_fmt.find(f"__print_symbolic(REC->{field},")
        if start < 0:
            return {}
        table: dict[int, str] = {}
        depth = 0
        end = len(self.print_fmt)
        for i in range(start + len("__print_symbolic("), len(self.print_fmt)):
            ch = self.print_fmt[i]
            if ch == "(":
                depth += 1
            elif ch == ")":
                if depth == 0:
                    end = i
                    break
                depth -= 1
        for number, name in _SYMBOL_RE.findall(self.print_fmt[start:end]):
            table[int(number, 0)] = name
        return table


_FIELD_RE: Final = re.compile(
    r"^\s*field:(?P<decl>[^;]*);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
    r"(?:\s*signed:(?P<signed>\d+);)?"
)
_DECL_RE: Final = re.compile(
    r"^(?P<type>.*?)\s*\b(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\[(?P<len>[^\]]*)\])?\s*$"
)
_SYMBOL_RE: Final = re.compile(r"\{\s*(-?(?:0x[0-9a-fA-F]+|\d+))\s*,\s*\"([^\"]*)\"\s*\}")


def _parse_field(line: str) -> Field | None:
    match = _FIELD_RE.match(line)
    if match is None:
        return None
    decl = _DECL_RE.match(match["decl"].strip())
    if decl is None or not decl["type"]:
        raise TraceDecodeError(f"cannot read field declaration {match['decl']!r}")
    length = decl["len"]
    is_array = length is not None
    array_len: int | None = None
    if length is not None:
        length = length.strip()
        array_len = int(length) if length.isdigit() else 0
    return Field(
        name=decl["name"],
        type=decl["type"].strip(),
        offset=int(match["offset"]),
        size=int(match["size"]),
        signed=match["signed"] == "1",
        is_array=is_array,
        array_len=array_len,
    )


def parse_format(text: str) -> EventFormat:
    """Parse an ``events/SYSTEM/EVENT/format`` file."""
    name: str | None = None
    event_id: int | None = None
    fields: dict[str, Field] = {}
    print_fmt = ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("name:"):
            name = stripped[len("name:") :].strip()
        elif stripped.startswith("ID:"):
            value = stripped[len("ID:") :].strip()
            if not value.isdigit():
                raise TraceDecodeError(f"bad event ID {value!r}")
            event_id = int(value)
        elif stripped.startswith("print fmt:"):
            print_fmt = stripped[len("print fmt:") :].strip()
        elif stripped.startswith("field:"):
            parsed = _parse_field(stripped)
            if parsed is None:
                raise TraceDecodeError(f"cannot read field line {stripped!r}")
            fields[parsed.name] = parsed
    if not name or event_id is None:
        raise TraceDecodeError("not an event format: no name or no ID")
    return EventFormat(name=name, id=event_id, fields=fields, print_fmt=print_fmt)


# --- pages ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class PageLayout:
    """Where ``struct buffer_data_page`` keeps its parts (``events/header_page``)."""

    timestamp_offset: int = 0
    timestamp_size: int = 8
    commit_offset: int = 8
    commit_size: int = 8
    """``local_t`` is a long: also the size of the stored missed-events count."""
    data_offset: int = 16
    data_size: int = 4080
    """Data bytes in a page (sub-buffer size minus the header)."""

    @property
    def page_size(self) -> int:
        return self.data_offset + self.data_size


DEFAULT_LAYOUT: Final = PageLayout()
"""x86_64 with 4 KiB sub-buffers."""

_HEADER_RE: Final = re.compile(
    r"field:\s*(?P<type>[^;]*?)\s+(?P<name>\w+);\s*offset:(?P<offset>\d+);\s*size:(?P<size>\d+);"
)


def parse_header_page(text: str) -> PageLayout:
    """Parse ``events/header_page``; raises TraceDecodeError when the
    timestamp, commit or data field is missing (use :data:`DEFAULT_LAYOUT`)."""
    found: dict[str, tuple[int, int]] = {}
    for match in _HEADER_RE.finditer(text):
        found.setdefault(match["name"], (int(match["offset"]), int(match["size"])))
    missing = {"timestamp", "commit", "data"} - found.keys()
    if missing:
        raise TraceDecodeError(f"header_page lacks {', '.join(sorted(missing))}")
    ts_off, ts_size = found["timestamp"]
    commit_off, commit_size = found["commit"]
    data_off, data_size = found["data"]
    if ts_size not in (4, 8) or commit_size not in (4, 8) or data_size <= 0:
        raise TraceDecodeError("header_page has implausible sizes")
    return PageLayout(ts_off, ts_size, commit_off, commit_size, data_off, data_size)


@dataclasses.dataclass(frozen=True, slots=True)
class RawEvent:
    """One record from a page: ``data`` starts at the common fields (and may
    end with up to 3 bytes of alignment padding)."""

    cpu: int
    ts: int
    """Raw trace clock value (ns for ``mono``, ``boot``, ``local``…)."""
    data: bytes
    seq: int = 0
    """Position in this CPU's stream, to keep same-time events in order."""

    @property
    def type_id(self) -> int:
        """``common_type``: the event id (the first u16 of every record)."""
        if len(self.data) < 2:
            raise TraceDecodeError("record shorter than common_type")
        return int.from_bytes(self.data[:2], "little")


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
    end_hdr = max(
        layout.timestamp_offset + layout.timestamp_size,
        layout.commit_offset + layout.commit_size,
        layout.data_offset,
    )
    if len(buf) < end_hdr:
        raise TraceDecodeError(f"page of {len(buf)} bytes is shorter than its header")
    ts = _u(buf, layout.timestamp_offset, layout.timestamp_size)
    page_ts = ts
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

    data = memoryview(buf)[layout.data_offset : layout.data_offset + size]
    events: list[RawEvent] = []
    extends = stamps = 0
    pos = 0
    while pos < size:
        if size - pos < RB_EVNT_HDR_SIZE:
            raise TraceDecodeError(f"entry header cut at data offset {pos}")
        header = int.from_bytes(data[pos : pos + 4], "little")
        type_len = header & 0x1F
        delta = header >> 5
        if type_len == RINGBUF_TYPE_PADDING:
            if delta == 0:
                break  # the null event: nothing more on this page
            if size - pos < 8:
                raise TraceDecodeError(f"padding entry cut at data offset {pos}")
            length = int.from_bytes(data[pos + 4 : pos + 8], "little") + RB_EVNT_HDR_SIZE
            if length < 8:
                raise TraceDecodeError(f"padding of {length} bytes at data offset {pos}")
            if delta != 1:
                ts = (ts + delta) & _U64
            pos += length  # may run past the commit: the page's padded tail
            continue
        if type_len in (RINGBUF_TYPE_TIME_EXTEND, RINGBUF_TYPE_TIME_STAMP):
            if size - pos < RB_LEN_TIME_EXTEND:
                raise TraceDecodeError(f"time entry cut at data offset {pos}")
            value = (int.from_bytes(data[pos + 4 : pos + 8], "little") << TS_SHIFT) | delta
            if type_len == RINGBUF_TYPE_TIME_EXTEND:
                ts = (ts + value) & _U64
                extends += 1
            else:
                ts = fix_abs_ts(value, ts)
                stamps += 1
            pos += RB_LEN_TIME_EXTEND
            continue
        if type_len == 0:
            if size - pos < 8:
                raise TraceDecodeError(f"long entry header cut at data offset {pos}")
            counted = int.from_bytes(data[pos + 4 : pos + 8], "little")
            if counted < 4:
                raise TraceDecodeError(f"long entry of length {counted} at data offset {pos}")
            start = pos + 8
            stop = pos + RB_EVNT_HDR_SIZE + counted
        else:
            start = pos + RB_EVNT_HDR_SIZE
            stop = start + type_len * RB_ALIGNMENT
        if stop > size:
            raise TraceDecodeError(
                f"entry at data offset {pos} ends at {stop}, past the commit {size}"
            )
        ts = (ts + delta) & _U64
        events.append(RawEvent(cpu=cpu, ts=ts, data=bytes(data[start:stop]), seq=seq))
        seq += 1
        pos = stop
    return PageEvents(
        cpu=cpu,
        timestamp=page_ts,
        events=tuple(events),
        size=size,
        missed=missed,
        missed_count=missed_count,
        extends=extends,
        stamps=stamps,
    )


def _u(buf: bytes | memoryview, offset: int, size: int) -> int:
    return int.from_bytes(buf[offset : offset + size], "little")


# --- TCP tracepoints --------------------------------------------------------------

Kind = Literal["set_state", "retransmit", "retransmit_synack", "send_reset", "receive_reset"]

EVENT_KINDS: Final[Mapping[str, Kind]] = {
    "inet_sock_set_state": "set_state",
    "tcp_retransmit_skb": "retransmit",
    "tcp_retransmit_synack": "retransmit_synack",
    "tcp_send_reset": "send_reset",
    "tcp_receive_reset": "receive_reset",
}
"""Tracepoint name -> :attr:`TraceEvent.kind`."""

TCP_EVENTS: Final = (
    "sock/inet_sock_set_state",
    "tcp/tcp_retransmit_skb",
    "tcp/tcp_retransmit_synack",
    "tcp/tcp_send_reset",
    "tcp/tcp_receive_reset",
)
"""The tracefs names (``events/<system>/<event>``) this module decodes."""

SK_RST_REASONS: Final[Mapping[int, str]] = {
    # enum sk_rst_reason, include/net/rstreason.h, as tcp_send_reset's print
    # fmt lists it on 6.18; Decoder prefers the table of the running kernel.
    0: "NOT_SPECIFIED",
    1: "NO_SOCKET",
    2: "TCP_INVALID_ACK_SEQUENCE",
    3: "TCP_RFC7323_PAWS",
    4: "TCP_TOO_OLD_ACK",
    5: "TCP_ACK_UNSENT_DATA",
    6: "TCP_FLAGS",
    7: "TCP_OLD_ACK",
    8: "TCP_ABORT_ON_DATA",
    9: "TCP_TIMEWAIT_SOCKET",
    10: "INVALID_SYN",
    11: "TCP_ABORT_ON_CLOSE",
    12: "TCP_ABORT_ON_LINGER",
    13: "TCP_ABORT_ON_MEMORY",
    14: "TCP_STATE",
    15: "TCP_KEEPALIVE_TIMEOUT",
    16: "TCP_DISCONNECT_WITH_DATA",
    17: "MPTCP_RST_EUNSPEC",
    18: "MPTCP_RST_EMPTCP",
    19: "MPTCP_RST_ERESOURCE",
    20: "MPTCP_RST_EPROHIBIT",
    21: "MPTCP_RST_EWQ2BIG",
    22: "MPTCP_RST_EBADPERF",
    23: "MPTCP_RST_EMIDDLEBOX",
    24: "ERROR",
    25: "MAX",
}


@dataclasses.dataclass(frozen=True, slots=True)
class TraceEvent:
    """A decoded TCP tracepoint hit.

    ``skaddr`` is the kernel's ``struct sock *`` (0 when the event has none,
    e.g. a reset sent for a segment that matched no socket); for
    ``retransmit_synack`` it is the listener.  ``oldstate``/``newstate`` are
    set for ``set_state`` only, ``state`` for ``retransmit`` and
    ``send_reset`` (None when the kernel says 0, "unknown"), ``reason`` for
    ``send_reset`` (``enum sk_rst_reason`` by name, or its number as text).
    States are the kernel's numbers (include/net/tcp_states.h).
    """

    kind: Kind
    ts_ns: int
    cpu: int
    skaddr: int
    family: int
    sport: int
    dport: int
    saddr: str
    daddr: str
    oldstate: int | None = None
    newstate: int | None = None
    state: int | None = None
    reason: str | None = None
    protocol: int = IPPROTO_TCP
    seq: int = 0


_ADDRS: Final = ("saddr", "daddr", "saddr_v6", "daddr_v6")
_NEEDS: Final[Mapping[Kind, tuple[str, ...]]] = {
    "set_state": (
        "skaddr",
        "oldstate",
        "newstate",
        "sport",
        "dport",
        "family",
        "protocol",
        *_ADDRS,
    ),
    "retransmit": ("skaddr", "state", "sport", "dport", "family", *_ADDRS),
    "retransmit_synack": ("skaddr", "sport", "dport", "family", *_ADDRS),
    "receive_reset": ("skaddr", "sport", "dport", "family", *_ADDRS),
    "send_reset": ("skaddr", "state", "reason", "saddr", "daddr"),
}


@dataclasses.dataclass(frozen=True, slots=True)
class _Plan:
    kind: Kind
    fields: Mapping[str, Field]
    min_size: int
    reasons: Mapping[int, str]


class Decoder:
    """Decode records of the TCP tracepoints, given the formats of the
    running kernel by event id (records of other events decode to None)."""

    def __init__(self, formats: Mapping[int, EventFormat], *, tcp_only: bool = True) -> None:
        """``tcp_only``: drop ``set_state`` events of other protocols (SCTP,
        MPTCP share the tracepoint)."""
        self._tcp_only = tcp_only
        self._plans: dict[int, _Plan] = {}
        for event_id, fmt in formats.items():
            kind = EVENT_KINDS.get(fmt.name)
            if kind is None:
                continue
            missing = [name for name in _NEEDS[kind] if name not in fmt.fields]
            if missing:
                raise TraceDecodeError(f"{fmt.name} format lacks {', '.join(missing)}")
            fields = {name: fmt.fields[name] for name in _NEEDS[kind]}
            reasons: Mapping[int, str] = {}
            if kind == "send_reset":
                reasons = {**SK_RST_REASONS, **fmt.symbols("reason")}
            self._plans[event_id] = _Plan(
                kind=kind,
                fields=fields,
                min_size=max(f.offset + f.size for f in fields.values()),
                reasons=reasons,
            )

    @property
    def kinds(self) -> dict[int, Kind]:
        """Event id -> kind, for the events this decoder knows."""
        return {event_id: plan.kind for event_id, plan in self._plans.items()}

    def decode(self, raw: RawEvent) -> TraceEvent | None:
        plan = self._plans.get(raw.type_id)
        if plan is None:
            return None
        data = raw.data
        if len(data) < plan.min_size:
            raise TraceDecodeError(
                f"{plan.kind} record of {len(data)} bytes, its format needs {plan.min_size}"
            )
        f = plan.fields

        def num(name: str) -> int:
            field = f[name]
            return int.from_bytes(
                data[field.offset : field.offset + field.size], "little", signed=field.signed
            )

        def raw_bytes(name: str) -> bytes:
            field = f[name]
            return data[field.offset : field.offset + field.size]

        skaddr = num("skaddr")
        if plan.kind == "send_reset":
            family, sport, saddr = _sockaddr(raw_bytes("saddr"))
            dfamily, dport, daddr = _sockaddr(raw_bytes("daddr"))
            code = num("reason")
            return TraceEvent(
                kind=plan.kind,
                ts_ns=raw.ts,
                cpu=raw.cpu,
                skaddr=skaddr,
                family=family or dfamily,
                sport=sport,
                dport=dport,
                saddr=saddr,
                daddr=daddr,
                state=num("state") or None,
                reason=plan.reasons.get(code, str(code)),
                seq=raw.seq,
            )
        family = num("family")
        if family == AF_INET:
            saddr = address_text(raw_bytes("saddr"))
            daddr = address_text(raw_bytes("daddr"))
        elif family == AF_INET6:
            saddr = address_text(raw_bytes("saddr_v6"))
            daddr = address_text(raw_bytes("daddr_v6"))
        else:
            saddr = daddr = ""
        protocol = IPPROTO_TCP
        oldstate = newstate = state = None
        if plan.kind == "set_state":
            protocol = num("protocol")
            if self._tcp_only and protocol != IPPROTO_TCP:
                return None
            oldstate = num("oldstate")
            newstate = num("newstate")
        elif plan.kind == "retransmit":
            state = num("state")
        return TraceEvent(
            kind=plan.kind,
            ts_ns=raw.ts,
            cpu=raw.cpu,
            skaddr=skaddr,
            family=family,
            sport=num("sport"),
            dport=num("dport"),
            saddr=saddr,
            daddr=daddr,
            oldstate=oldstate,
            newstate=newstate,
            state=state,
            protocol=protocol,
            seq=raw.seq,
        )

    def decode_all(self, raws: Iterable[RawEvent]) -> list[TraceEvent]:
        """Decode every record, dropping the ones of other events."""
        return [event for raw in raws if (event := self.decode(raw)) is not None]


def _sockaddr(raw: bytes) -> tuple[int, int, str]:
    """(family, port, address) of a ``struct sockaddr_in``/``sockaddr_in6``
    (``sa_family`` host order, port network order); (0, 0, "") if neither."""
    if len(raw) < 8:
        return 0, 0, ""
    family = int.from_bytes(raw[0:2], "little")
    port = int.from_bytes(raw[2:4], "big")
    if family == AF_INET:
        return family, port, address_text(raw[4:8])
    if family == AF_INET6 and len(raw) >= 24:
        return family, port, address_text(raw[8:24])
    return 0, 0, ""


_ADDRESS_CACHE: dict[bytes, str] = {}
_ADDRESS_CACHE_MAX = 4096


def address_text(raw: bytes) -> str:
    """4 or 16 address bytes as text; the few addresses of a lab come again
    and again, so they are remembered (a bounded cache)."""
    text = _ADDRESS_CACHE.get(raw)
    if text is None:
        family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
        text = socket.inet_ntop(family, raw)
        if len(_ADDRESS_CACHE) < _ADDRESS_CACHE_MAX:
            _ADDRESS_CACHE[raw] = text
    return text


def merge(events: Iterable[TraceEvent]) -> list[TraceEvent]:
    """Events of several CPUs in time order: by (ts, cpu, position on the CPU)."""
    return sorted(events, key=lambda e: (e.ts_ns, e.cpu, e.seq))


def ipv4_filter_literal(address: str) -> str:
    """The number an ftrace filter compares a ``__u8 saddr[4]`` field with:
    the four bytes read as a little-endian u32 (192.0.2.7 -> ``0x070200c0``)."""
    packed = ipaddress.IPv4Address(address).packed
    return f"0x{int.from_bytes(packed, 'little'):08x}"
