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
  would look like a fault the user did not ask for.  The ARP and ND packets
  themselves, sent and read, are :mod:`proxy.neighbour_frames`.

Every table here is bounded, because every one of them is filled by what
arrives on the wire, and anyone on a link can send frames from any number of
addresses (a flood from random on-link IPv6 sources once grew the neighbour
table by 67 MB per 200,000 frames, never released):

- neighbours: at most :data:`MAX_NEIGHBOURS` per port, least recently used
  evicted first; entries not used for :data:`GC_STALE_TIME` go first (see
  :class:`NeighbourTable`);
- frames waiting for a MAC: at most :data:`MAX_PENDING_HOPS` unresolved next
  hops per port, :data:`PENDING_PER_HOP` frames each; more are dropped and
  counted, never queued, and nothing waiting is evicted to make room;
- the route lookup cache: at most :data:`ROUTE_CACHE` destinations, emptied
  when full.

Pure: frames in, frames out, ``now`` passed in.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import socket
from collections.abc import Iterable

from proxy.neighbour_frames import arp_request, neighbor_solicitation, parse_neighbour_frame

RESOLVE_RETRY = 1.0
"""Seconds between ARP/NS retries (RFC 4861 RetransTimer, 1 s)."""
RESOLVE_ATTEMPTS = 3
"""RFC 4861 MAX_MULTICAST_SOLICIT; after that the waiting frames are dropped."""
PENDING_PER_HOP = 64
"""Frames queued per unresolved next hop; more are dropped and counted."""
MAX_PENDING_HOPS = 64
"""Unresolved next hops per port with frames waiting.  A frame for one more
is dropped and counted; the waiting ones are kept (they are what a real
conversation needs), and each gives up after :data:`RESOLVE_ATTEMPTS`
solicitations, 3 s.  This also caps how many ARP/NS a flood can make the
proxy send: at most this many per port per second.  Worst case held:
``MAX_PENDING_HOPS × PENDING_PER_HOP`` frames of at most the port's MTU
(6 MB per port at 1500 bytes)."""
NEIGHBOUR_TTL = 300.0
"""How long a learned MAC is trusted without being seen again."""
MAX_NEIGHBOURS = 4096
"""Neighbour entries per port.  A lab has two or three hosts per link and a
compose network a few more; the kernel's own default hard limit for a whole
table is 1024 (``gc_thresh3``, arp(7) and ip-sysctl.rst), shared by every
interface.  4096 entries take about 1 MB per port."""
GC_STALE_TIME = 60.0
"""An entry not used (learned, or looked up to send a frame) for this long is
forgotten first: the kernel's ``gc_stale_time`` default, 60 s (arp(7);
``neigh_periodic_work`` in net/core/neighbour.c drops unreferenced entries
idle that long)."""
ROUTE_CACHE = 4096
"""Destinations whose route lookup is remembered; the cache is emptied when
full (the next lookups fill it again with what is in use)."""

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
    """Longest-prefix match over connected subnets and static routes.

    Lookups are cached by destination address; the cache holds at most
    :data:`ROUTE_CACHE` of them and is emptied when full (a flood to random
    destinations costs a lookup per frame, never memory)."""

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
        if len(self._cache) >= ROUTE_CACHE:
            self._cache.clear()
        self._cache[dst] = found
        return found

    def gateways(self) -> list[tuple[str, str]]:
        """``(port, next hop)`` of every static route: the neighbours the
        table must keep (:meth:`NeighbourTable.pin`)."""
        return [(r.port, str(r.gateway)) for r in self.routes if r.gateway is not None]


@dataclasses.dataclass(slots=True)
class _Pending:
    port: str
    frames: collections.deque[bytes]
    attempts: int
    next_try: float


@dataclasses.dataclass(slots=True)
class _Neighbour:
    mac: bytes
    confirmed: float
    """When the MAC was last learned (an entry older than
    :data:`NEIGHBOUR_TTL` is not used to send)."""
    used: float
    """When it was last learned or looked up (the LRU order)."""


class NeighbourTable:
    """IP → MAC per port, learned and resolved; frames waiting for a MAC.

    Bounds and eviction (the table is filled by whatever arrives, so it
    must forget):

    - at most :data:`MAX_NEIGHBOURS` entries per port, kept in least recently
      used order (learning an entry or looking it up to send a frame uses
      it).  To make room for a new entry the table first forgets entries not
      used for :data:`GC_STALE_TIME` (as the kernel's ``gc_stale_time``), then
      the least recently used one.  A pinned entry (:meth:`pin`: the next hop
      of a static route) is never evicted; frames waiting for a MAC live
      apart, in the pending queues, and are never evicted for room either;
    - at most :data:`MAX_PENDING_HOPS` unresolved next hops per port, each
      with at most :data:`PENDING_PER_HOP` frames; beyond either, the new
      frame is refused (:meth:`enqueue` says why) and counted in
      ``unresolved_drops``.  A next hop is forgotten when it resolves or after
      :data:`RESOLVE_ATTEMPTS` solicitations.

    ``evicted`` counts entries forgotten for room or staleness.
    """

    def __init__(self, ports: Iterable[Port]) -> None:
        self.ports = {p.name: p for p in ports}
        self._macs: dict[str, collections.OrderedDict[str, _Neighbour]] = {
            name: collections.OrderedDict() for name in self.ports
        }
        self._pending: dict[str, dict[str, _Pending]] = {name: {} for name in self.ports}
        self._pinned: set[tuple[str, str]] = set()
        # each port's subnets as (family, network, mask) integers: the
        # on-link test of every received frame's source, without ipaddress
        self._subnets: dict[str, list[tuple[int, int, int]]] = {
            name: [
                (
                    socket.AF_INET if iface.version == 4 else socket.AF_INET6,
                    int(iface.network.network_address),
                    int(iface.network.netmask),
                )
                for iface in port.addresses
            ]
            for name, port in self.ports.items()
        }
        self.unresolved_drops = 0
        self.evicted = 0

    def __len__(self) -> int:
        return sum(len(table) for table in self._macs.values())

    def sizes(self) -> dict[str, int]:
        """Entries per port (for the control API's status)."""
        return {name: len(table) for name, table in self._macs.items()}

    def pending_hops(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def pin(self, port: str, ip: str) -> None:
        """Never evict ``ip``'s entry on ``port`` (a route's next hop)."""
        self._pinned.add((port, ip))

    def learn(self, port: str, ip: str, mac: bytes, now: float) -> list[Released]:
        """Record ``ip`` at ``mac`` on ``port``; returns the frames that were
        waiting for it, as ``(port, frame, mac)`` (MACs not yet rewritten)."""
        if mac[0] & 1 or mac == b"\0" * 6:
            return []  # broadcast, multicast or unset: not a host's address
        table = self._macs[port]
        entry = table.get(ip)
        if entry is None:
            self._make_room(port, table, now)
            table[ip] = _Neighbour(mac, now, now)
        else:
            entry.mac, entry.confirmed, entry.used = mac, now, now
            table.move_to_end(ip)
        pending = self._pending[port].pop(ip, None)
        if pending is None:
            return []
        return [(port, frame, mac) for frame in pending.frames]

    def learn_passive(self, port: str, ip: str, mac: bytes, now: float) -> list[Released]:
        """A frame from ``ip`` arrived on ``port`` with source ``mac``: if
        ``ip`` is on one of the port's subnets, that is its MAC."""
        entry = self._macs[port].get(ip)
        if entry is not None and entry.mac == mac and now - entry.confirmed < 1.0:
            return []  # the common case, cheaply (LRU order good to a second)
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        try:
            address = int.from_bytes(socket.inet_pton(family, ip), "big")
        except OSError:
            return []
        for subnet_family, network, mask in self._subnets[port]:
            if subnet_family == family and address & mask == network:
                return self.learn(port, ip, mac, now)
        return []

    def lookup(self, port: str, ip: str, now: float) -> bytes | None:
        table = self._macs.get(port)
        entry = table.get(ip) if table is not None else None
        if entry is None or now - entry.confirmed > NEIGHBOUR_TTL:
            return None
        entry.used = now
        table.move_to_end(ip)  # type: ignore[union-attr]
        return entry.mac

    def expire(self, now: float) -> int:
        """Forget entries not used for :data:`GC_STALE_TIME` (pinned ones
        stay); returns how many went."""
        gone = 0
        for port, table in self._macs.items():
            gone += self._forget_stale(port, table, now)
        return gone

    def _forget_stale(
        self, port: str, table: collections.OrderedDict[str, _Neighbour], now: float
    ) -> int:
        gone = 0
        # the table is in LRU order: the stale ones are at its front
        for _ in range(len(table)):
            ip, entry = next(iter(table.items()))
            if now - entry.used <= GC_STALE_TIME:
                break
            if (port, ip) in self._pinned:
                entry.used = now
                table.move_to_end(ip)
                continue
            del table[ip]
            gone += 1
        self.evicted += gone
        return gone

    def _make_room(
        self, port: str, table: collections.OrderedDict[str, _Neighbour], now: float
    ) -> None:
        if len(table) < MAX_NEIGHBOURS:
            return
        self._forget_stale(port, table, now)
        for _ in range(len(table)):
            if len(table) < MAX_NEIGHBOURS:
                return
            ip = next(iter(table))
            if (port, ip) in self._pinned:
                table.move_to_end(ip)
                continue
            del table[ip]
            self.evicted += 1

    def enqueue(
        self, port: str, ip: str, frame: bytes, now: float
    ) -> tuple[list[bytes], str | None]:
        """Queue ``frame`` until ``ip``'s MAC is known.  Returns the
        solicitation frames to send on ``port`` now (none if one is in
        flight) and, when the frame was refused, why (None: it waits)."""
        waiting = self._pending[port]
        pending = waiting.get(ip)
        if pending is None:
            if len(waiting) >= MAX_PENDING_HOPS:
                self.unresolved_drops += 1
                return [], f"{MAX_PENDING_HOPS} next hops on {port} wait for a MAC already"
            pending = _Pending(port, collections.deque(), 0, now)
            waiting[ip] = pending
        refused = None
        if len(pending.frames) >= PENDING_PER_HOP:
            self.unresolved_drops += 1
            refused = f"{PENDING_PER_HOP} frames wait for {ip}'s MAC already"
        else:
            pending.frames.append(frame)
        return self._solicit(port, ip, pending, now), refused

    def tick(self, now: float) -> tuple[list[tuple[str, bytes]], int]:
        """Retry solicitations that are due; give up after RESOLVE_ATTEMPTS.
        Returns ``(port, solicitation)`` frames to send and how many waiting
        frames were dropped for good."""
        out: list[tuple[str, bytes]] = []
        dropped = 0
        for port, waiting in self._pending.items():
            for ip, pending in list(waiting.items()):
                if now < pending.next_try:
                    continue
                if pending.attempts >= RESOLVE_ATTEMPTS:
                    dropped += len(pending.frames)
                    del waiting[ip]
                    continue
                out.extend((port, f) for f in self._solicit(port, ip, pending, now))
        self.unresolved_drops += dropped
        return out, dropped

    def next_due(self) -> float | None:
        if not any(self._pending.values()):
            return None  # nothing waits for a MAC: the common case, cheaply
        return min(
            (p.next_try for waiting in self._pending.values() for p in waiting.values()),
            default=None,
        )

    def _solicit(self, port_name: str, ip: str, pending: _Pending, now: float) -> list[bytes]:
        if now < pending.next_try and pending.attempts > 0:
            return []
        port = self.ports[port_name]
        target = ipaddress.ip_address(ip)
        source = port.source_for(target)
        # an attempt counts even when it cannot be made (no address of the
        # target's family on the port): the frames are given up in time
        pending.attempts += 1
        pending.next_try = now + RESOLVE_RETRY
        if source is None:
            return []
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
