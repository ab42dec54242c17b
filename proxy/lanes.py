"""Which connections the middlebox hands to the kernel's express lane, and
each one's way in and back out, on the proxy's side (sans-IO).

:mod:`proxy.express` builds the tc filters that let the kernel forward an
established connection; this module decides which connections get them and
keeps track of each one while it has them:

- eligibility: an established connection, not reset, no FIN yet
  (:func:`may_enter`), while no rule could want its data or pure ACKs and
  nothing is paced (:func:`rules_allow`);
- its kind (:func:`kind_for`): where the ports wear the endpoints' mirrored
  MACs, ``u32`` filters pass frames on unchanged (:mod:`proxy.express`);
  elsewhere, when the kernel allows it, ``cls_bpf`` filters rewrite the
  MACs (:mod:`proxy.bpf_prog`); else the connection stays in the proxy.  A
  lane keeps the MACs it was given: a neighbour that changes its MAC
  meanwhile is not followed (the proxy learns it only from what it sees);
- at most :data:`MAX_EXPRESS` connections at once, each in a numbered slot
  (its filters' priority);
- leaving: a FIN, RST or SYN of an express connection takes the connection
  back from the kernel first (:func:`waiting_for`), so the segments that
  answer it come through the proxy again and are tagged and logged; frames
  that arrive until its filters are gone are parked (at most
  :data:`MAX_PARKED`) and then go through the proxy in arrival order.

A lane is ``installing`` until the shell has added its filters, then ``on``,
and ``leaving`` from when it was asked to go until the shell has removed
them.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from proxy import wire
from proxy.flows import Endpoint, Flow
from proxy.rules import RuleEngine

MAX_EXPRESS = 64
"""Connections in the kernel lane at once (each costs two tc filters)."""
MAX_PARKED = 256
"""Frames one express connection parks while its filters are removed (a few
milliseconds: a handful of frames in practice); more are dropped with
``queue_full``."""

# a FIN, RST or SYN takes a connection out of the express lane
_EXIT_FLAGS = wire.FIN | wire.RST | wire.SYN
# rules on these tags need to see data and pure ACKs: no express lane
_LANE_TAGS = frozenset({None, "data", "ack", "retransmit"})


@dataclasses.dataclass(frozen=True, slots=True)
class Rewrite:
    """The Ethernet addresses a MAC-rewriting lane writes, ``(destination,
    source)`` per direction."""

    to_server: tuple[bytes, bytes]
    """Out of the back port: the server's next hop, the back port's MAC."""
    to_client: tuple[bytes, bytes]
    """Out of the front port: the client's next hop, the front port's MAC."""


@dataclasses.dataclass(slots=True)
class ExpressLane:
    """One connection's place in the kernel lane (see :mod:`proxy.express`)."""

    slot: int
    client: tuple[str, int]
    server: tuple[str, int]
    state: Literal["installing", "on", "leaving"] = "installing"
    rewrite: Rewrite | None = None
    """None: frames cross unchanged (mirrored MACs, ``u32`` filters)."""
    parked: list[tuple[str, bytes, bool, float]] = dataclasses.field(default_factory=list)
    """Frames waiting for the lane to close: ``(port, frame, csum_not_ready,
    arrival)``."""


Lanes = dict[tuple[Endpoint, Endpoint], ExpressLane]
"""The connections in the lane, by ``(client, server)``."""


def rules_allow(engine: RuleEngine) -> bool:
    """No rule could want a data or pure-ACK segment, and nothing is paced."""
    if engine.pace:
        return False
    return all(r.match.tag not in _LANE_TAGS for r in engine.rules)


def may_enter(flow: Flow, lanes: Lanes) -> bool:
    """``flow`` is established and still open, not in the lane yet, and there
    is room for it."""
    return (
        flow.handshake_done
        and not flow.reset
        and flow.first_fin is None
        and (flow.client, flow.server) not in lanes
        and len(lanes) < MAX_EXPRESS
    )


def kind_for(
    hops: tuple[bytes | None, bytes | None], ports: tuple[bytes, bytes], rewrite: bool
) -> Literal["mirrored"] | Rewrite | None:
    """How a connection rides the lane, given the MACs of its next hops
    ``(client side, server side)`` and of the ports ``(front, back)``:
    ``mirrored`` when frames may cross unchanged, a :class:`Rewrite` when
    they must not and the kernel can rewrite them (``rewrite``), None when
    it stays in the proxy (a MAC unknown, or no rewriting lane)."""
    client_hop, server_hop = hops
    front, back = ports
    if client_hop is None or server_hop is None:
        return None
    if client_hop == back and server_hop == front:
        return "mirrored"
    if not rewrite:
        return None
    return Rewrite(to_server=(server_hop, back), to_client=(client_hop, front))


def enter(lanes: Lanes, flow: Flow, rewrite: Rewrite | None = None) -> ExpressLane:
    """Give ``flow`` a lane in the lowest free slot."""
    used = {lane.slot for lane in lanes.values()}
    slot = next(i for i in range(MAX_EXPRESS + 1) if i not in used)
    lane = ExpressLane(slot, flow.client, flow.server, rewrite=rewrite)
    lanes[(flow.client, flow.server)] = lane
    return lane


def waiting_for(lanes: Lanes, ip: wire.IPv4 | wire.IPv6, tcp: wire.Tcp) -> ExpressLane | None:
    """The lane this segment must wait for: its connection's, when the lane is
    leaving already or this segment (a FIN, RST or SYN) makes it leave."""
    lane = lanes.get(((ip.src, tcp.src_port), (ip.dst, tcp.dst_port))) or (
        lanes.get(((ip.dst, tcp.dst_port), (ip.src, tcp.src_port)))
    )
    if lane is not None and (lane.state == "leaving" or tcp.flags & _EXIT_FLAGS):
        return lane
    return None


def leave(lane: ExpressLane) -> bool:
    """Ask ``lane`` to leave; True the first time (the shell is then to remove
    its filters)."""
    if lane.state == "leaving":
        return False
    lane.state = "leaving"
    return True


def park(
    lane: ExpressLane,
    port: str,
    frame: bytes | bytearray | memoryview,
    csum_not_ready: bool,
    arrival: float,
) -> bool:
    """Keep a frame until ``lane`` is gone; False when it has no room left."""
    if len(lane.parked) >= MAX_PARKED:
        return False
    lane.parked.append((port, bytes(frame), csum_not_ready, arrival))
    return True
