"""What tracefs says about the shape of ftrace's binary data: an event's
``format`` file, the page header (``events/header_page``), and the raw
record those two describe.

The binary records carry no names, only bytes at offsets that change from
one kernel to the next; every decoder here finds its fields through these
descriptions of the running kernel rather than through offsets of its own.

Formats (``events/SYSTEM/EVENT/format``)
    :func:`parse_format` reads an event's field table (name, offset, size,
    signedness, array length) and its ``print fmt``; the record of an event
    starts with the common fields (``common_type`` is the event id).

Pages (``events/header_page``; kernel/trace/ring_buffer.c)
    A page is ``struct buffer_data_page``: a u64 ``time_stamp``, a ``local_t
    commit`` (bytes of data committed) and ``data``.
    :func:`parse_header_page` reads the offsets; :data:`DEFAULT_LAYOUT` is
    x86_64's (timestamp at 0, commit at 8, data at 16).  Decoding the pages
    themselves is :mod:`core.tracebuf`'s job.

Records
    :class:`RawEvent` is one event's bytes as a page held them, common
    fields first: its ``common_type`` names the format that describes the
    rest.  The page decoder makes them and the tracepoint decoder
    (:mod:`core.tracepoints`) reads them, so they live here, below both.

Anything malformed raises :class:`TraceDecodeError` (a ValueError) and
nothing else.

This module is pure: text in, dataclasses out.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Final

__all__ = [
    "DEFAULT_LAYOUT",
    "EventFormat",
    "Field",
    "PageLayout",
    "RawEvent",
    "TraceDecodeError",
    "parse_format",
    "parse_header_page",
]


class TraceDecodeError(ValueError):
    """Input that is not what the kernel writes: truncated, bogus lengths."""


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


# --- records -------------------------------------------------------------------


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
