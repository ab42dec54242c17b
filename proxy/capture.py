"""pcapng capture of every frame the proxy sees, with its verdict.

Wireshark and tshark read the file; each TCP segment carries a packet
comment such as ``verdict=drop rule=drop-syn-ack@1 tags=syn-ack`` so the
capture says not only what was on the wire but what the middlebox did with
it (``tshark -r F -T fields -e frame.comment``, or the packet comments pane).

Frames are recorded as they arrive (inbound, on the port they came in on),
plus the frames the proxy makes itself (the RSTs of a ``reset`` rule,
outbound).  ARP/NS the proxy sends to resolve next hops are not recorded.

Block layout: pcapng draft (IETF opsawg), sections 4.1 (SHB), 4.2 (IDB), 4.3
(EPB).  Timestamps are microseconds since the epoch (the default
``if_tsresol``).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from typing import IO

from core.events import Segment

SHB_TYPE = 0x0A0D0D0A
IDB_TYPE = 0x00000001
EPB_TYPE = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
LINKTYPE_ETHERNET = 1
OPT_END = 0
OPT_COMMENT = 1
IF_NAME = 2
SHB_USERAPPL = 4
EPB_FLAGS = 2
EPB_INBOUND = 0b01
EPB_OUTBOUND = 0b10
SNAPLEN = 0  # no limit


def _option(code: int, value: bytes) -> bytes:
    pad = (-len(value)) % 4
    return struct.pack("=HH", code, len(value)) + value + b"\0" * pad


def _block(kind: int, body: bytes) -> bytes:
    length = 12 + len(body)
    return struct.pack("=II", kind, length) + body + struct.pack("=I", length)


def section_header(application: str = "tcplab proxy") -> bytes:
    options = _option(SHB_USERAPPL, application.encode()) + _option(OPT_END, b"")
    body = struct.pack("=IHHq", BYTE_ORDER_MAGIC, 1, 0, -1) + options
    return _block(SHB_TYPE, body)


def interface_description(name: str) -> bytes:
    options = _option(IF_NAME, name.encode()) + _option(OPT_END, b"")
    body = struct.pack("=HHI", LINKTYPE_ETHERNET, 0, SNAPLEN) + options
    return _block(IDB_TYPE, body)


def enhanced_packet(
    interface: int, timestamp: float, frame: bytes, comment: str | None, inbound: bool = True
) -> bytes:
    micros = int(timestamp * 1_000_000)
    pad = (-len(frame)) % 4
    options = _option(EPB_FLAGS, struct.pack("=I", EPB_INBOUND if inbound else EPB_OUTBOUND))
    if comment:
        options += _option(OPT_COMMENT, comment.encode())
    options += _option(OPT_END, b"")
    body = (
        struct.pack("=IIIII", interface, micros >> 32, micros & 0xFFFFFFFF, len(frame), len(frame))
        + frame
        + b"\0" * pad
        + options
    )
    return _block(EPB_TYPE, body)


def comment_for(segment: Segment | None) -> str | None:
    """``verdict=… rule=… tags=…`` for a segment record."""
    if segment is None:
        return None
    parts = [f"verdict={segment.verdict}"]
    if segment.rule:
        parts.append(f"rule={segment.rule}")
    if segment.delay_ms is not None:
        parts.append(f"delay_ms={segment.delay_ms}")
    parts.append("tags=" + ",".join(segment.tags))
    parts.append(f"conn={segment.conn}")
    return " ".join(parts)


class PcapWriter:
    """Appends blocks to an open binary file; one interface per port."""

    def __init__(self, stream: IO[bytes], ports: Iterable[str]) -> None:
        self.stream = stream
        self.index = {name: i for i, name in enumerate(ports)}
        self.packets = 0
        stream.write(section_header())
        for name in self.index:
            stream.write(interface_description(name))

    def write(
        self,
        port: str,
        frame: bytes | bytearray | memoryview,
        comment: str | None,
        *,
        inbound: bool = True,
        timestamp: float | None = None,
    ) -> None:
        stamp = time.time() if timestamp is None else timestamp
        self.stream.write(
            enhanced_packet(self.index[port], stamp, bytes(frame), comment, inbound=inbound)
        )
        self.packets += 1

    def flush(self) -> None:
        self.stream.flush()
