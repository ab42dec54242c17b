"""Where to send a forwarded frame: the egress port, the next hop, its MAC.

The middlebox forwards frames itself (its kernel's IP forwarding is off), so
it needs the three things a router's forwarding path has:

- a route table: which port reaches a destination, and through which next
  hop — read once at start from the namespace's own addresses and routes, so
  the same proxy works unchanged in the lab and in containers;
- a neighbour table: the MAC of each next hop, learned from ARP and
  Neighbor Advertisement frames the proxy sees, from the source of every
  frame it receives (an on-link sender's MAC), and seeded from the kernel's
  neighbour table at start;
- resolution: when a next hop's MAC is unknown, an ARP request (RFC 826) or
  Neighbor Solicitation (RFC 4861 §7.2.2) is sent, and the frames waiting for
  the answer are queued (bounded) instead of dropped — a lost first SYN
  would look like a fault the user did not ask for.

Pure: frames in, frames out, ``now`` passed in.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import socket
import struct
from collections.abc import Iterable

from proxy import wire

ETH_BROADCAST = b"\xff" * 6
# RFC 826: hardware type Ethernet (1), protocol IPv4, request 1 / reply 2
ARP_REQUEST = 1
ARP_REPLY = 2
_ARP = struct.Struct("!HHBBH6s4s6s4s")
# RFC 4861 §4.3 / §4.4: ICMPv6 types and the link-layer address options
ICMPV6 = 58
ND_NEIGHBOR_SOLICIT = 135
ND_NEIGHBOR_ADVERT = 136
ND_OPT_SOURCE_LL = 1
ND_OPT_TARGET_LL = 2

RESOLVE_RETRY = 1.0
"""Seconds between ARP/NS retries (RFC 4861 RetransTimer, 1 s)."""
RESOLVE_ATTEMPTS = 3
"""RFC 4861 MAX_MULTICAST_SOLICIT; after that the waiting frames are dropped."""
PENDING_PER_HOP = 64
"""Frames queued per unresolved next hop; more are dropped and counted."""
NEIGHBOUR_TTL = 300.0
"""How long a learned MAC is trusted without being seen again."""

Released = tuple[str, bytes, bytes]
"""A frame whose next hop just got resolved: ``(port, frame, next-hop MAC)``."""
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclasses.dataclass(frozen=True, slots=True)
class Port:
    """One interface the proxy forwards on."""

    name: str
    mac: bytes
    mtu: int
    addresses: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...]
    """The middlebox's own addresses on this port, with their prefixes."""

    def source_for(self, target: IPAddress) -> IPAddress | None:
        """Our address on the same subnet as ``target`` (for ARP/NS)."""
        for iface in self.addresses:
            if iface.version == target.version and target in iface.network:
                return iface.ip
        for iface in self.addresses:
            if iface.version == target.version and not iface.ip.is_link_local:
                return iface.ip
        return None


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    network: IPNetwork
    port: str
    gateway: IPAddress | None = None


class RouteTable:
    """Longest-prefix match over connected subnets and static routes."""

    def __init__(self, ports: Iterable[Port], routes: Iterable[Route] = ()) -> None:
        self.ports = {p.name: p for p in ports}
        self.own: frozenset[str] = frozenset(
            str(iface.ip) for p in self.ports.values() for iface in p.addresses
        )
        table = [Route(iface.network, p.name) for p in self.ports.values() for iface in p.addresses]
        table.extend(r for r in routes if r.port in self.ports)
        self.routes = sorted(table, key=lambda r: r.network.prefixlen, reverse=True)
        self._cache: dict[str, tuple[str, str] | None] = {}

    def lookup(self, dst: str) -> tuple[str, str] | None:
        """``(port name, next-hop address)`` for ``dst``, None if unroutable."""
        hit = self._cache.get(dst, False)
        if hit is not False:
            return hit  # type: ignore[return-value]
        found: tuple[str, str] | None = None
        address = ipaddress.ip_address(dst)
        for route in self.routes:
            if address.version == route.network.version and address in route.network:
                found = (route.port, str(route.gateway or address))
                break
        if len(self._cache) < 65536:
            self._cache[dst] = found
        return found


@dataclasses.dataclass(slots=True)
class _Pending:
    port: str
    frames: collections.deque[bytes]
    attempts: int
    next_try: float


class NeighbourTable:
    """IP → MAC per port, learned and resolved; frames waiting for a MAC."""

    def __init__(self, ports: Iterable[Port]) -> None:
        self.ports = {p.name: p for p in ports}
        self._macs: dict[tuple[str, str], tuple[bytes, float]] = {}
        self._pending: dict[tuple[str, str], _Pending] = {}
        self.unresolved_drops = 0

    def learn(self, port: str, ip: str, mac: bytes, now: float) -> list[Released]:
        """Record ``ip`` at ``mac`` on ``port``; returns the frames that were
        waiting for it, as ``(port, frame, mac)`` (MACs not yet rewritten)."""
        if mac[0] & 1 or mac == b"\0" * 6:
            return []  # broadcast, multicast or unset: not a host's address
        self._macs[(port, ip)] = (mac, now)
        pending = self._pending.pop((port, ip), None)
        if pending is None:
            return []
        return [(port, frame, mac) for frame in pending.frames]

    def learn_passive(self, port: str, ip: str, mac: bytes, now: float) -> list[Released]:
        """A frame from ``ip`` arrived on ``port`` with source ``mac``: if
        ``ip`` is on one of the port's subnets, that is its MAC."""
        entry = self._macs.get((port, ip))
        if entry is not None and entry[0] == mac and now - entry[1] < 1.0:
            return []  # the common case, cheaply
        address = ipaddress.ip_address(ip)
        for iface in self.ports[port].addresses:
            if iface.version == address.version and address in iface.network:
                return self.learn(port, ip, mac, now)
        return []

    def lookup(self, port: str, ip: str, now: float) -> bytes | None:
        entry = self._macs.get((port, ip))
        if entry is None or now - entry[1] > NEIGHBOUR_TTL:
            return None
        return entry[0]

    def enqueue(self, port: str, ip: str, frame: bytes, now: float) -> list[bytes]:
        """Queue ``frame`` until ``ip``'s MAC is known; returns the
        solicitation frames to send on ``port`` now (none if one is in flight)."""
        key = (port, ip)
        pending = self._pending.get(key)
        if pending is None:
            pending = _Pending(port, collections.deque(), 0, now)
            self._pending[key] = pending
        if len(pending.frames) >= PENDING_PER_HOP:
            self.unresolved_drops += 1
        else:
            pending.frames.append(frame)
        return self._solicit(key, pending, now)

    def tick(self, now: float) -> tuple[list[tuple[str, bytes]], int]:
        """Retry solicitations that are due; give up after RESOLVE_ATTEMPTS.
        Returns ``(port, solicitation)`` frames to send and how many waiting
        frames were dropped for good."""
        out: list[tuple[str, bytes]] = []
        dropped = 0
        for key, pending in list(self._pending.items()):
            if now < pending.next_try:
                continue
            if pending.attempts >= RESOLVE_ATTEMPTS:
                dropped += len(pending.frames)
                del self._pending[key]
                continue
            out.extend((key[0], f) for f in self._solicit(key, pending, now))
        self.unresolved_drops += dropped
        return out, dropped

    def next_due(self) -> float | None:
        return min((p.next_try for p in self._pending.values()), default=None)

    def _solicit(self, key: tuple[str, str], pending: _Pending, now: float) -> list[bytes]:
        if now < pending.next_try and pending.attempts > 0:
            return []
        port = self.ports[key[0]]
        target = ipaddress.ip_address(key[1])
        source = port.source_for(target)
        if source is None:
            return []
        pending.attempts += 1
        pending.next_try = now + RESOLVE_RETRY
        if target.version == 4:
            return [arp_request(port.mac, str(source), str(target))]
        return [neighbor_solicitation(port.mac, str(source), str(target))]

    def observe(self, port: str, frame: bytes, now: float) -> list[Released]:
        """Learn from an ARP or Neighbor Solicitation/Advertisement frame."""
        learned = parse_neighbour_frame(frame)
        if learned is None:
            return []
        ip, mac = learned
        return self.learn(port, ip, mac, now)


def arp_request(src_mac: bytes, src_ip: str, target_ip: str) -> bytes:
    """Who has ``target_ip``? Tell ``src_ip`` (broadcast)."""
    body = _ARP.pack(
        1,
        wire.ETH_P_IP,
        6,
        4,
        ARP_REQUEST,
        src_mac,
        socket.inet_aton(src_ip),
        b"\0" * 6,
        socket.inet_aton(target_ip),
    )
    return wire.build_ethernet(ETH_BROADCAST, src_mac, wire.ETH_P_ARP, body)


def solicited_node(target: str) -> tuple[str, bytes]:
    """The solicited-node multicast address for ``target`` and its MAC
    (RFC 4291 §2.7.1, RFC 2464 §7)."""
    packed = socket.inet_pton(socket.AF_INET6, target)
    group = socket.inet_pton(socket.AF_INET6, "ff02::1:ff00:0")[:13] + packed[13:]
    return socket.inet_ntop(socket.AF_INET6, group), b"\x33\x33" + group[12:]


def _icmpv6(src: str, dst: str, body: bytes) -> bytes:
    pseudo = (
        socket.inet_pton(socket.AF_INET6, src)
        + socket.inet_pton(socket.AF_INET6, dst)
        + struct.pack("!I3xB", len(body), ICMPV6)
    )
    checksum = wire.internet_checksum(pseudo + body)
    return body[:2] + struct.pack("!H", checksum) + body[4:]


def neighbor_solicitation(src_mac: bytes, src_ip: str, target_ip: str) -> bytes:
    """RFC 4861 §4.3, to the target's solicited-node group, hop limit 255."""
    group, group_mac = solicited_node(target_ip)
    body = (
        struct.pack("!BBHI", ND_NEIGHBOR_SOLICIT, 0, 0, 0)
        + socket.inet_pton(socket.AF_INET6, target_ip)
        + struct.pack("!BB", ND_OPT_SOURCE_LL, 1)
        + src_mac
    )
    packet = wire.build_ipv6(src_ip, group, ICMPV6, _icmpv6(src_ip, group, body), hop_limit=255)
    return wire.build_ethernet(group_mac, src_mac, wire.ETH_P_IPV6, packet)


def parse_neighbour_frame(frame: bytes) -> tuple[str, bytes] | None:
    """``(ip, mac)`` announced by an ARP packet (its sender) or by a Neighbor
    Advertisement / Solicitation (its link-layer option); None otherwise.
    Never raises."""
    if len(frame) < 14:
        return None
    ethertype = int.from_bytes(frame[12:14], "big")
    if ethertype == wire.ETH_P_ARP:
        if len(frame) < 14 + _ARP.size:
            return None
        htype, ptype, hlen, plen, _op, sha, spa, _tha, _tpa = _ARP.unpack_from(frame, 14)
        if htype != 1 or ptype != wire.ETH_P_IP or hlen != 6 or plen != 4:
            return None
        if spa == b"\0\0\0\0":
            return None  # an ARP probe: the sender has no address yet
        return socket.inet_ntoa(spa), sha
    if ethertype != wire.ETH_P_IPV6 or len(frame) < 14 + 40 + 24:
        return None
    if frame[14 + 6] != ICMPV6:
        return None
    icmp = 14 + 40
    kind = frame[icmp]
    src = socket.inet_ntop(socket.AF_INET6, frame[14 + 8 : 14 + 24])
    target = socket.inet_ntop(socket.AF_INET6, frame[icmp + 8 : icmp + 24])
    if kind == ND_NEIGHBOR_ADVERT:
        want, ip = ND_OPT_TARGET_LL, target
    elif kind == ND_NEIGHBOR_SOLICIT:
        if src == "::":
            return None  # duplicate address detection: no address yet
        want, ip = ND_OPT_SOURCE_LL, src
    else:
        return None
    offset = icmp + 24
    while offset + 8 <= len(frame):
        opt, units = frame[offset], frame[offset + 1]
        if units == 0:
            return None
        if opt == want and units == 1:
            return ip, bytes(frame[offset + 2 : offset + 8])
        offset += units * 8
    return None
