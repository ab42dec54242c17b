"""The middlebox's forwarding decisions, without the sockets.

:class:`Middlebox` is the router the proxy is: a frame comes in on a port at
``now``; out come the frames to put on the wire (which port, which bytes)
and the events to log.  :mod:`proxy.forward` owns the AF_PACKET sockets and
the clock and does nothing but move bytes between them and this class.
This module keeps the state the steps share and runs them in order; what
each step decides is in its own module.

Per frame, in order:

1. ARP and Neighbor Discovery frames teach the neighbour table (and may
   release frames that were waiting for a MAC); the kernel answers them.
2. Frames not addressed to the port's MAC, non-IP frames, and IP packets
   for the middlebox's own addresses are left to its kernel.
3. A FIN, RST or SYN of a connection in the kernel's express lane takes the
   connection back from the lane, and waits until it is out
   (:mod:`proxy.lanes`).
4. The rest is routed (:mod:`proxy.router`): egress port and next hop, a
   checksum left for the NIC completed, TTL / hop limit decremented; or
   dropped with a ``frame_dropped`` event (no route, larger than the egress
   MTU, TTL run out).
5. TCP segments are tagged (:mod:`proxy.flows`) and judged
   (:mod:`proxy.rules`): passed, dropped, delayed, duplicated, held until
   released, or answered by an in-window RST to both ends
   (:mod:`proxy.verdicts`).  Every segment gets a ``segment`` record with
   its verdict.  Other IP traffic is forwarded as it is.
6. The egress MAC is looked up at send time (a delayed frame uses the MAC
   known when it leaves); an unknown one triggers ARP/NS, and the frame
   waits for the answer instead of being lost.

Time: ``now`` (the monotonic clock the shell sleeps on) schedules delays;
``arrival`` is the kernel's receive timestamp of the frame (wall clock),
which becomes the record's ``ts``.  A segment that leaves at once is logged
when judged; the shell stamps ``sent_ts`` on every record of a segment it
sends (:func:`proxy.verdicts.stamp_sent`).  A paced segment is logged when
it leaves.  A segment a rule delays or holds is logged twice: on arrival
(``delay`` / ``hold``) and when it leaves (``release``).

Bounds (everything here is filled by what arrives, so everything is capped):

- connections: :class:`proxy.flows.FlowTable`, ``max_flows`` (65,536, least
  recently seen evicted; idle ones expire);
- delayed and held segments: ``queue_capacity`` each (10,000 by default); a
  segment that finds its queue full is dropped with ``queue_full``;
- neighbours and frames waiting for a MAC: :class:`~proxy.neighbours.NeighbourTable`
  (4,096 entries per port, LRU; 64 unresolved next hops per port);
- express lanes: :data:`proxy.lanes.MAX_EXPRESS` connections, each parking
  at most :data:`proxy.lanes.MAX_PARKED` frames while it leaves the kernel
  lane;
- ``frame_dropped`` records: a burst and a rate per reason
  (:class:`proxy.counters.DropLog`); the next record of a reason says in
  ``suppressed`` how many frames went unlogged.  ``counters`` always count
  every frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Literal, Unpack

from core.events import Record, Segment, conn_id
from proxy import flows as flowsmod
from proxy import lanes as lanesmod
from proxy import router, verdicts, wire
from proxy import rules as rulesmod
from proxy.counters import COUNTERS, DropFacts, DropLog, DropReason, count_drop
from proxy.lanes import ExpressLane
from proxy.neighbours import NeighbourTable, Port, Released, RouteTable
from proxy.options import LogSegments
from proxy.router import Refusal, Routed


@dataclasses.dataclass(slots=True)
class Output:
    """What the shell does after one call: frames to send now, records to log."""

    frames: list[tuple[str, bytes | bytearray]] = dataclasses.field(default_factory=list)
    records: list[Record] = dataclasses.field(default_factory=list)
    segment: Segment | None = None
    """The received frame's ``segment`` record, when it was a TCP segment."""
    injected: list[tuple[str, bytes, Segment]] = dataclasses.field(default_factory=list)
    """Segments the proxy made: ``(port, frame, record)``."""
    express_add: list[ExpressLane] = dataclasses.field(default_factory=list)
    """Connections to hand to the kernel lane (the shell installs, then calls
    :meth:`Middlebox.express_done`)."""
    express_remove: list[ExpressLane] = dataclasses.field(default_factory=list)
    """Connections to take back from it (ditto)."""

    def extend(self, other: Output) -> None:
        self.frames.extend(other.frames)
        self.records.extend(other.records)
        self.injected.extend(other.injected)
        self.express_add.extend(other.express_add)
        self.express_remove.extend(other.express_remove)


class Middlebox:
    """Sans-IO router with a rule engine on its TCP segments."""

    def __init__(
        self,
        ports: Iterable[Port],
        *,
        routes: RouteTable | None = None,
        engine: rulesmod.RuleEngine | None = None,
        flow_table: flowsmod.FlowTable | None = None,
        log_segments: LogSegments = "all",
        queue_capacity: int = 10_000,
    ) -> None:
        self.ports = {p.name: p for p in ports}
        self.routes = routes or RouteTable(self.ports.values())
        self.neighbours = NeighbourTable(self.ports.values())
        self.engine = engine or rulesmod.RuleEngine()
        self.flows = flow_table or flowsmod.FlowTable()
        self.log_segments = log_segments
        self.delayed = rulesmod.DelayQueue(queue_capacity)
        self.held = rulesmod.HoldQueue(queue_capacity)
        self.counters = dict.fromkeys(COUNTERS, 0)
        self.describe_every_segment = False
        """Fill ``Output.segment`` for every TCP segment (the capture's comments)."""
        self.express_enabled = False
        """Hand established connections to the kernel lane when no rule can
        touch their data (the shell sets this when it built the lane)."""
        self.express_rewrite = False
        """The kernel lane can rewrite MACs (cls_bpf): connections whose
        frames must change their Ethernet header may enter it too."""
        self.lanes: lanesmod.Lanes = {}
        self.front, self.back = list(self.ports)[:2] if len(self.ports) >= 2 else ("", "")
        self._last_expire = 0.0
        self.drop_log = DropLog()
        # judges TCP segments with the same table, engine, queues and counters
        self._judge = verdicts.Judge(
            self.flows,
            self.engine,
            self.delayed,
            self.held,
            self.counters,
            self.drop_log,
            self._send_routed,
        )
        # a static route's next hop is never evicted from the neighbour table
        for port_name, gateway in self.routes.gateways():
            self.neighbours.pin(port_name, gateway)

    # --- the three ways in -------------------------------------------------

    def receive(
        self,
        port_name: str,
        frame: bytes | bytearray | memoryview,
        now: float,
        *,
        arrival: float,
        csum_not_ready: bool = False,
    ) -> Output:
        """One frame read on ``port_name`` at ``now`` (the scheduling clock);
        ``arrival`` is the kernel's receive timestamp of it (wall clock)."""
        self.counters["frames_in"] += 1
        return self._handle(port_name, frame, now, arrival, csum_not_ready)

    def _handle(
        self,
        port_name: str,
        frame: bytes | bytearray | memoryview,
        now: float,
        arrival: float,
        csum_not_ready: bool,
    ) -> Output:
        """What :meth:`receive` does with a frame, also for a frame parked
        while its connection left the express lane (read, and counted, once)."""
        out = Output()
        dst_mac = frame[:6]  # compared in place: most frames are ours
        if dst_mac != self.ports[port_name].mac:
            # broadcast / multicast (IEEE 802's group bit: the first octet's
            # lowest), such as ARP and ND, or not ours: the kernel's business,
            # but ARP and ND teach us neighbours on the way
            self._to_kernel(
                port_name, frame, now, out, teaches=bool(len(dst_mac) and dst_mac[0] & 1)
            )
            return out
        try:
            parsed = wire.parse_frame(frame)
        except wire.FrameError as exc:
            self._drop(out, "malformed", now, arrival, port=port_name, detail=str(exc))
            return out
        ip, tcp = parsed.ip, parsed.tcp
        if self.lanes and tcp is not None and ip is not None:
            lane = lanesmod.waiting_for(self.lanes, ip, tcp)
            if lane is not None:
                self._park(lane, port_name, frame, csum_not_ready, now, arrival, out)
                return out
        if ip is None or ip.dst in self.routes.own:
            # not IP, or for the middlebox itself
            self._to_kernel(port_name, frame, now, out, teaches=router.teaches_neighbours(parsed))
            return out
        # the sender is (usually) on-link: remember its MAC
        self._send_released(
            self.neighbours.learn_passive(port_name, ip.src, parsed.eth.src, now), out
        )
        routed = router.route(
            frame,
            parsed,
            port_name,
            self.routes,
            self.ports,
            self.counters,
            csum_not_ready=csum_not_ready,
        )
        if isinstance(routed, Refusal):
            self._drop(out, routed.reason, now, arrival, **routed.facts)
        elif tcp is None:
            self._send_routed(routed, now, arrival, out)
        else:
            self._judge.segment(
                parsed,
                tcp,
                routed,
                self.ports[port_name],
                now,
                arrival,
                out,
                log_segments=self.log_segments,
                describe_all=self.describe_every_segment,
                express=self._maybe_express if self.express_enabled else None,
            )
        return out

    def tick(self, now: float, wall: float) -> Output:
        """Send what is due: delayed frames, ARP/NS retries; expire flows.
        ``wall`` is the wall-clock ``now`` (for records of what is due)."""
        out = Output()
        for routed in self.delayed.pop_due(now):
            self._depart(routed, now, out)
            self._send_routed(routed, now, wall, out)
        retries, dropped = self.neighbours.tick(now)
        for port, frame in retries:
            out.frames.append((port, frame))
        if dropped:
            self._drop(out, "unresolved", now, wall, dropped, frames=dropped)
        if now - self._last_expire > 1.0:
            self._last_expire = now
            self.flows.expire(now)
            self.neighbours.expire(now)
        return out

    def release(self, now: float, rule: str | None = None, *, wall: float) -> Output:
        """Let held segments go (those of ``rule``, or all), in arrival order.
        ``wall`` is the wall-clock ``now`` (for records of what happens to
        them)."""
        out = Output()
        for routed in self.held.release(rule):
            self.counters["released"] += 1
            self._depart(routed, now, out)  # a release, if its hold was logged
            self._send_routed(routed, now, wall, out)
        return out

    # --- the express lane ------------------------------------------------------

    def express_done(self, lane: ExpressLane, op: Literal["add", "remove"], now: float) -> Output:
        """The shell finished installing (``add``) or removing ``lane``'s filters.
        A lane that was asked to leave while it was being installed waits for
        its removal: until then the kernel may still forward its segments."""
        out = Output()
        key = (lane.client, lane.server)
        if self.lanes.get(key) is not lane:
            return out
        if op == "add":
            if lane.state == "installing":
                lane.state = "on"
        else:
            del self.lanes[key]
            for port_name, frame, not_ready, arrival in lane.parked:
                out.extend(self._handle(port_name, frame, now, arrival, not_ready))
        return out

    def express_failed(self, lane: ExpressLane, now: float) -> Output:
        """Installing failed (and what may have been installed was removed):
        forget the lane, keep forwarding in the proxy."""
        return self.express_done(lane, "remove", now)

    def express_allowed(self) -> bool:
        """No rule could want a data or pure-ACK segment, and nothing is paced."""
        return self.express_enabled and lanesmod.rules_allow(self.engine)

    def express_recall(self) -> Output:
        """Rules changed so that data matters again: take every connection back."""
        out = Output()
        if self.express_allowed():
            return out
        for lane in self.lanes.values():
            if lanesmod.leave(lane):
                out.express_remove.append(lane)
        return out

    def next_wakeup(self) -> float | None:
        """When :meth:`tick` has something to do next (None: nothing pending)."""
        delayed, retry = self.delayed.next_due(), self.neighbours.next_due()
        if delayed is None or retry is None:
            return retry if delayed is None else delayed
        return min(delayed, retry)

    # --- internals -----------------------------------------------------------

    def _to_kernel(
        self,
        port_name: str,
        frame: bytes | bytearray | memoryview,
        now: float,
        out: Output,
        *,
        teaches: bool,
    ) -> None:
        """Leave ``frame`` to the middlebox's kernel; when it ``teaches`` (ARP,
        ND), learn the neighbour it announces."""
        self.counters["to_kernel"] += 1
        if teaches:
            self._send_released(self.neighbours.observe(port_name, bytes(frame), now), out)

    def _park(
        self,
        lane: ExpressLane,
        port_name: str,
        frame: bytes | bytearray | memoryview,
        csum_not_ready: bool,
        now: float,
        arrival: float,
        out: Output,
    ) -> None:
        """A segment of an express connection that must wait for its lane to
        close: take the connection back from the kernel lane first, so the
        segments that answer this one come through the proxy again."""
        if lanesmod.leave(lane):
            out.express_remove.append(lane)
        if not lanesmod.park(lane, port_name, frame, csum_not_ready, arrival):
            conn = conn_id(*lane.client, *lane.server)
            self._drop(
                out,
                "queue_full",
                now,
                arrival,
                port=port_name,
                conn=conn,
                detail="express lane parking",
            )
            return
        self.counters["express_parked"] += 1

    def _maybe_express(self, flow: flowsmod.Flow, now: float, out: Output) -> None:
        """Hand ``flow`` to the kernel lane if it may enter (:mod:`proxy.lanes`)
        and its frames can cross as they are (mirrored MACs) or the kernel
        can rewrite their MACs (:attr:`express_rewrite`)."""
        if not lanesmod.may_enter(flow, self.lanes) or not self.express_allowed():
            return
        # its client on the front port, its server on the back: their next hops
        to_client = self.routes.lookup(flow.client[0])
        to_server = self.routes.lookup(flow.server[0])
        if to_client is None or to_server is None:
            return
        if (to_client[0], to_server[0]) != (self.front, self.back):
            return
        hops = (
            self.neighbours.lookup(self.front, to_client[1], now),
            self.neighbours.lookup(self.back, to_server[1], now),
        )
        macs = (self.ports[self.front].mac, self.ports[self.back].mac)
        kind = lanesmod.kind_for(hops, macs, self.express_rewrite)
        if kind is None:
            return
        lane = lanesmod.enter(self.lanes, flow, None if kind == "mirrored" else kind)
        self.counters["express_connections"] += 1
        out.express_add.append(lane)

    def _depart(self, routed: Routed, now: float, out: Output) -> None:
        """A delayed or held segment leaves: log what its arrival left for now."""
        record = verdicts.departure_record(routed, now)
        if record is not None:
            out.records.append(record)

    def _send_routed(self, routed: Routed, now: float, wall: float, out: Output) -> None:
        """Put ``routed`` on the wire, or queue it for its next hop's MAC.
        ``wall`` dates a ``frame_dropped`` record if it cannot even wait."""
        port = self.ports[routed.port]
        mac = self.neighbours.lookup(routed.port, routed.next_hop, now)
        if mac is None:
            solicits, refused = self.neighbours.enqueue(
                routed.port, routed.next_hop, bytes(routed.frame), now
            )
            for solicit in solicits:
                out.frames.append((routed.port, solicit))
            if refused is not None:
                self._drop(
                    out,
                    "unresolved",
                    now,
                    wall,
                    port=routed.port,
                    dst=routed.next_hop,
                    frames=1,
                    detail=refused,
                )
            return
        frame = routed.frame
        frame[0:6] = mac
        frame[6:12] = port.mac
        self.counters["forwarded"] += 1
        out.frames.append((routed.port, frame))

    def _send_released(self, released: list[Released], out: Output) -> None:
        """Frames that waited for their next hop's MAC, now known."""
        for port_name, frame, mac in released:
            buf = bytearray(frame)
            buf[0:6] = mac
            buf[6:12] = self.ports[port_name].mac
            self.counters["forwarded"] += 1
            out.frames.append((port_name, buf))

    def _drop(
        self,
        out: Output,
        reason: DropReason,
        now: float,
        ts: float,
        count: int = 1,
        **facts: Unpack[DropFacts],
    ) -> None:
        """Count ``count`` frames the middlebox itself drops, and log them (a
        record dated ``ts``) unless the drop log's rate is spent."""
        record = count_drop(self.counters, self.drop_log, reason, now, ts, count, **facts)
        if record is not None:
            out.records.append(record)
