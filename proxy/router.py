"""The routing step: where a received IP packet goes, and what a router
changes in it on the way.

The middlebox's kernel does not forward (its IP forwarding is off), so the
proxy makes a router's decisions itself, per packet:

- frames that are its kernel's business stay there: non-IP frames, and
  packets for the middlebox's own addresses; ARP and Neighbor Discovery
  among them also teach the neighbour table (:func:`teaches_neighbours`);
- the rest gets an egress port and a next hop from the route table, or is
  refused: no route, or larger than the egress MTU — no fragmentation and no
  ICMP: the lab's endpoints do path MTU discovery with DF set, and the drop
  is visible as a ``frame_dropped`` record;
- a TCP checksum the kernel left for the NIC to finish
  (TP_STATUS_CSUMNOTREADY, include/uapi/linux/if_packet.h) is completed;
- the TTL / hop limit is decremented, as a router does (traceroute shows the
  hop), and a packet it would bring to zero is refused.

Pure: frame bytes in, a :class:`Routed` frame or a :class:`Refusal` out (and
the checksums it completes counted).
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Mapping
from typing import Literal, NamedTuple

from core.events import Segment
from proxy import wire
from proxy.counters import DropFacts, DropReason
from proxy.neighbours import Port, RouteTable

# RFC 791 §3.1 (IPv4 header: TTL at byte 8, header checksum at 10) and
# RFC 8200 §3 (IPv6 header: hop limit at byte 7)
_IPV4_TTL = 8
_IPV4_CHECKSUM = 10
_IPV6_HOP_LIMIT = 7
_H = struct.Struct("!H")
_IPPROTO_ICMPV6 = 58
"""RFC 4443 §2.1: ICMPv6's next-header number (Neighbor Discovery travels in it)."""


@dataclasses.dataclass(slots=True)
class Routed:
    """A frame past routing, waiting to be sent (now, later, or on release)."""

    port: str
    next_hop: str
    frame: bytearray
    segment: Segment | None = None
    """The ``segment`` record made when it was judged (TCP only)."""
    log_on_departure: Literal["no", "as_is", "release"] = "no"
    """What to log when a delayed frame leaves: nothing, the record itself
    (paced), or a ``release`` of it (a delay rule)."""
    decided: float = 0.0
    """``now`` when it was judged (for a release's ``kept_ms``)."""


class Refusal(NamedTuple):
    """A packet the router will not forward, and what to say about it."""

    reason: DropReason
    facts: DropFacts


def teaches_neighbours(parsed: wire.Frame) -> bool:
    """Among the frames left to the kernel (not IP, or for the middlebox's
    own addresses): an ARP frame, or ICMPv6 (Neighbor Discovery, RFC 4861)."""
    ip = parsed.ip
    if ip is None:
        return parsed.eth.ethertype == wire.ETH_P_ARP
    return isinstance(ip, wire.IPv6) and ip.next_header == _IPPROTO_ICMPV6


def route(
    frame: bytes | bytearray | memoryview,
    parsed: wire.Frame,
    in_port: str,
    routes: RouteTable,
    ports: Mapping[str, Port],
    counters: dict[str, int],
    *,
    csum_not_ready: bool,
) -> Routed | Refusal:
    """Route the IP packet ``frame`` that arrived on ``in_port``: its egress
    port and next hop, with the router's changes made, or why not (checked in
    this order: route, MTU, hop limit).  Completed checksums are counted in
    ``counters``."""
    ip = parsed.ip
    assert ip is not None
    where = routes.lookup(ip.dst)
    if where is None:
        return Refusal("no_route", {"port": in_port, "src": ip.src, "dst": ip.dst})
    out_name, next_hop = where
    mtu = ports[out_name].mtu
    ip_len = len(frame) - parsed.eth.header_len
    if ip_len > mtu:
        return Refusal(
            "mtu",
            {
                "port": in_port,
                "egress": out_name,
                "bytes": ip_len,
                "mtu": mtu,
                "src": ip.src,
                "dst": ip.dst,
            },
        )
    if csum_not_ready and parsed.tcp is not None:
        frame = wire.complete_tcp_checksum(bytes(frame))
        counters["checksums_completed"] += 1
    buf = bytearray(frame)
    if not decrement_hop_limit(buf, parsed):
        return Refusal("ttl", {"port": in_port, "src": ip.src, "dst": ip.dst})
    return Routed(out_name, next_hop, buf)


def decrement_hop_limit(buf: bytearray, parsed: wire.Frame) -> bool:
    """TTL / hop limit minus one, as a router does (RFC 791, RFC 8200);
    False when the packet must not be forwarded (it would reach 0)."""
    ip = parsed.ip
    base = parsed.eth.header_len
    if isinstance(ip, wire.IPv4):
        ttl = buf[base + _IPV4_TTL]
        if ttl <= 1:
            return False
        buf[base + _IPV4_TTL] = ttl - 1
        # RFC 1624 incremental update: the TTL is the high byte of its word
        (old,) = _H.unpack_from(buf, base + _IPV4_CHECKSUM)
        total = (~old & 0xFFFF) + (~0x0100 & 0xFFFF)
        total = (total & 0xFFFF) + (total >> 16)
        total = (total & 0xFFFF) + (total >> 16)
        _H.pack_into(buf, base + _IPV4_CHECKSUM, ~total & 0xFFFF)
        return True
    hop = buf[base + _IPV6_HOP_LIMIT]
    if hop <= 1:
        return False
    buf[base + _IPV6_HOP_LIMIT] = hop - 1
    return True
