"""The middlebox's forwarding decisions, without the sockets.

:class:`Middlebox` is the router the proxy is: a frame comes in on a port at
``now``; out come the frames to put on the wire (which port, which bytes)
and the events to log.  :mod:`proxy.forward` owns the AF_PACKET sockets and
the clock and does nothing but move bytes between them and this class.

Per frame, in order:

1. ARP and Neighbor Discovery frames teach the neighbour table (and may
   release frames that were waiting for a MAC); the kernel answers them.
2. Frames not addressed to the port's MAC, non-IP frames, and IP packets
   for the middlebox's own addresses are left to its kernel.
3. The rest is routed: egress port and next hop from the route table, TTL /
   hop limit decremented (a router does; traceroute shows the hop), dropped
   when it would reach zero, dropped with a ``frame_dropped`` event when it
   is larger than the egress MTU (no fragmentation, no ICMP: the lab's
   endpoints do path MTU discovery with DF set, and the drop is visible).
4. A frame whose checksum the kernel left for the NIC to finish
   (TP_STATUS_CSUMNOTREADY) gets its TCP checksum completed first.
5. TCP segments are tagged (:mod:`proxy.flows`) and judged
   (:mod:`proxy.rules`): passed, dropped, delayed, duplicated, held until
   released, or answered by an in-window RST to both ends.  Every segment
   gets a ``segment`` record with its verdict.  Other IP traffic is forwarded
   as it is.
6. The egress MAC is looked up at send time (a delayed frame uses the MAC
   known when it leaves); an unknown one triggers ARP/NS, and the frame
   waits for the answer instead of being lost.

Time: ``now`` (the monotonic clock the shell sleeps on) schedules delays;
``arrival`` is the kernel's receive timestamp of the frame (wall clock),
which becomes the record's ``ts``.  A segment that leaves at once is logged
when judged; the shell stamps ``sent_ts`` on every record of a segment it
sends (:func:`stamp_sent`).  A paced segment is logged when it leaves.  A
segment a rule delays or holds is logged twice: on arrival (``delay`` /
``hold``) and when it leaves (``release``).

Bounds (everything here is filled by what arrives, so everything is capped):

- connections: :class:`proxy.flows.FlowTable`, ``max_flows`` (65,536, least
  recently seen evicted; idle ones expire);
- delayed and held segments: ``queue_capacity`` each (10,000 by default); a
  segment that finds its queue full is dropped with ``queue_full``;
- neighbours and frames waiting for a MAC: :class:`~proxy.neighbours.NeighbourTable`
  (4,096 entries per port, LRU; 64 unresolved next hops per port);
- express lanes: :data:`MAX_EXPRESS` connections, each parking at most
  :data:`MAX_PARKED` frames while it leaves the kernel lane;
- ``frame_dropped`` records: at most :data:`DROP_LOG_BURST` at once and
  :data:`DROP_LOG_RATE` a second per reason (:class:`DropLog`); the next
  record of a reason says in ``suppressed`` how many frames went unlogged.
  ``counters`` always count every frame.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterable
from typing import Literal

from core.events import FrameDropped, Record, Segment, Verdict, conn_id
from proxy import flows as flowsmod
from proxy import rules as rulesmod
from proxy import wire
from proxy.neighbours import NeighbourTable, Port, Released, RouteTable
from proxy.options import LogSegments

# a FIN, RST or SYN takes a connection out of the express lane
_LANE_EXIT_FLAGS = wire.FIN | wire.RST | wire.SYN
# rules on these tags need to see data and pure ACKs: no express lane
_LANE_TAGS = frozenset({None, "data", "ack", "retransmit"})
MAX_EXPRESS = 64
"""Connections in the kernel lane at once (each costs two tc filters)."""
MAX_PARKED = 256
"""Frames one express connection parks while its filters are removed (a few
milliseconds: a handful of frames in practice); more are dropped with
``queue_full``."""
DROP_LOG_RATE = 10.0
"""``frame_dropped`` records per second per reason, at most (a flood of bad
frames once wrote a 102 MB log, one line per frame)."""
DROP_LOG_BURST = 10
"""``frame_dropped`` records per reason that may be logged back to back."""

CONTROL_TAGS = frozenset(
    {"syn", "syn-ack", "handshake-ack", "fin", "fin-ack", "last-ack", "rst", "retransmit"}
)
"""Segments logged in ``control`` mode (with any segment a rule acted on)."""

_SENT_NOW = frozenset({"pass", "duplicate", "inject", "release"})


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


@dataclasses.dataclass(slots=True)
class ExpressLane:
    """One connection's place in the kernel lane (see :mod:`proxy.express`)."""

    slot: int
    client: tuple[str, int]
    server: tuple[str, int]
    state: Literal["installing", "on", "leaving"] = "installing"
    parked: list[tuple[str, bytes, bool, float]] = dataclasses.field(default_factory=list)
    """Frames waiting for the lane to close: ``(port, frame, csum_not_ready,
    arrival)``."""


@dataclasses.dataclass(slots=True)
class _Routed:
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


class DropLog:
    """Rate limit for ``frame_dropped`` records: a token bucket per reason.

    Each reason's bucket holds up to :data:`DROP_LOG_BURST` tokens and
    refills at :data:`DROP_LOG_RATE` per second of ``now``; a record is
    logged when a token is there, else it is counted as suppressed, and the
    next record logged for that reason carries the count.  Bound: one
    bucket per reason, and the reasons are the middlebox's own fixed few
    (``malformed``, ``no_route``, ``mtu``, ``ttl``, ``queue_full``,
    ``unresolved``); never evicted.  Pure: ``now`` is passed in.
    """

    def __init__(self, rate: float = DROP_LOG_RATE, burst: int = DROP_LOG_BURST) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[str, list[float]] = {}
        """reason → [tokens, when last refilled, frames suppressed since
        the last record logged]"""

    def admit(self, reason: str, now: float, frames: int = 1) -> int | None:
        """None: do not log this drop (it is counted as suppressed).  Else log
        it, with the returned number of frames suppressed before it."""
        bucket = self._buckets.get(reason)
        if bucket is None:
            bucket = self._buckets[reason] = [self.burst, now, 0]
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            bucket[2] += frames
            return None
        bucket[0] = tokens - 1.0
        suppressed = int(bucket[2])
        bucket[2] = 0
        return suppressed

    def suppressed(self) -> dict[str, int]:
        """Frames not logged since each reason's last record."""
        return {reason: int(b[2]) for reason, b in self._buckets.items() if b[2]}


COUNTERS = (
    "frames_in",
    "forwarded",
    "to_kernel",
    "segments",
    "dropped_rule",
    "delayed",
    "held",
    "released",
    "duplicated",
    "resets_injected",
    "dropped_malformed",
    "dropped_mtu",
    "dropped_ttl",
    "dropped_no_route",
    "dropped_unresolved",
    "dropped_queue_full",
    "checksums_completed",
    "express_connections",
    "express_parked",
)


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
        self.lanes: dict[tuple[tuple[str, int], tuple[str, int]], ExpressLane] = {}
        self.front, self.back = list(self.ports)[:2] if len(self.ports) >= 2 else ("", "")
        self._last_expire = 0.0
        self.drop_log = DropLog()
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
        out = Output()
        counters = self.counters
        counters["frames_in"] += 1
        port = self.ports[port_name]
        dst_mac = bytes(frame[:6])
        if dst_mac != port.mac:
            # broadcast / multicast (ARP, ND) or not ours: the kernel's business,
            # but ARP and ND teach us neighbours on the way
            counters["to_kernel"] += 1
            if dst_mac[:1] and dst_mac[0] & 1:
                self._send_released(self.neighbours.observe(port_name, bytes(frame), now), out)
            return out
        try:
            parsed = wire.parse_frame(frame)
        except wire.FrameError as exc:
            counters["dropped_malformed"] += 1
            if (suppressed := self.drop_log.admit("malformed", now)) is not None:
                out.records.append(
                    FrameDropped(
                        ts=arrival,
                        reason="malformed",
                        port=port_name,
                        detail=str(exc),
                        suppressed=suppressed or None,
                    )
                )
            return out
        ip = parsed.ip
        tcp = parsed.tcp
        if self.lanes and tcp is not None and ip is not None:
            lane = self.lanes.get(((ip.src, tcp.src_port), (ip.dst, tcp.dst_port))) or (
                self.lanes.get(((ip.dst, tcp.dst_port), (ip.src, tcp.src_port)))
            )
            if lane is not None and (lane.state == "leaving" or tcp.flags & _LANE_EXIT_FLAGS):
                # a FIN, RST or SYN of an express connection: take the
                # connection back from the kernel lane first, so the segments
                # that answer this one come through the proxy again
                if lane.state != "leaving":
                    lane.state = "leaving"
                    out.express_remove.append(lane)
                if len(lane.parked) >= MAX_PARKED:
                    counters["dropped_queue_full"] += 1
                    if (suppressed := self.drop_log.admit("queue_full", now)) is not None:
                        out.records.append(
                            FrameDropped(
                                ts=arrival,
                                reason="queue_full",
                                port=port_name,
                                conn=conn_id(*lane.client, *lane.server),
                                detail="express lane parking",
                                suppressed=suppressed or None,
                            )
                        )
                    return out
                lane.parked.append((port_name, bytes(frame), csum_not_ready, arrival))
                counters["express_parked"] += 1
                return out
        if ip is None:
            counters["to_kernel"] += 1
            if parsed.eth.ethertype == wire.ETH_P_ARP:
                self._send_released(self.neighbours.observe(port_name, bytes(frame), now), out)
            return out
        if ip.dst in self.routes.own:
            counters["to_kernel"] += 1
            if isinstance(ip, wire.IPv6) and ip.next_header == 58:
                self._send_released(self.neighbours.observe(port_name, bytes(frame), now), out)
            return out
        # the sender is (usually) on-link: remember its MAC
        self._send_released(
            self.neighbours.learn_passive(port_name, ip.src, bytes(frame[6:12]), now), out
        )
        route = self.routes.lookup(ip.dst)
        if route is None:
            counters["dropped_no_route"] += 1
            if (suppressed := self.drop_log.admit("no_route", now)) is not None:
                out.records.append(
                    FrameDropped(
                        ts=arrival,
                        reason="no_route",
                        port=port_name,
                        src=ip.src,
                        dst=ip.dst,
                        suppressed=suppressed or None,
                    )
                )
            return out
        out_name, next_hop = route
        egress = self.ports[out_name]
        ip_len = len(frame) - parsed.eth.header_len
        if ip_len > egress.mtu:
            counters["dropped_mtu"] += 1
            if (suppressed := self.drop_log.admit("mtu", now)) is not None:
                out.records.append(
                    FrameDropped(
                        ts=arrival,
                        reason="mtu",
                        port=port_name,
                        egress=out_name,
                        bytes=ip_len,
                        mtu=egress.mtu,
                        src=ip.src,
                        dst=ip.dst,
                        suppressed=suppressed or None,
                    )
                )
            return out
        if csum_not_ready and parsed.tcp is not None:
            frame = wire.complete_tcp_checksum(bytes(frame))
            counters["checksums_completed"] += 1
        buf = bytearray(frame)
        if not _decrement_hop_limit(buf, parsed):
            counters["dropped_ttl"] += 1
            if (suppressed := self.drop_log.admit("ttl", now)) is not None:
                out.records.append(
                    FrameDropped(
                        ts=arrival,
                        reason="ttl",
                        port=port_name,
                        src=ip.src,
                        dst=ip.dst,
                        suppressed=suppressed or None,
                    )
                )
            return out
        routed = _Routed(out_name, next_hop, buf)
        if tcp is None:
            self._send_routed(routed, now, arrival, out)
            return out
        self._judge(parsed, tcp, routed, port_name, now, arrival, out)
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
            self.counters["dropped_unresolved"] += dropped
            suppressed = self.drop_log.admit("unresolved", now, dropped)
            if suppressed is not None:
                out.records.append(
                    FrameDropped(
                        ts=wall,
                        reason="unresolved",
                        frames=dropped,
                        suppressed=suppressed or None,
                    )
                )
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

    def _depart(self, routed: _Routed, now: float, out: Output) -> None:
        """A delayed or held segment leaves: log what its arrival left for now."""
        record = routed.segment
        if record is None or routed.log_on_departure == "no":
            return
        if routed.log_on_departure == "release":
            # delay_ms stays: a release with one ends a delay, without one a hold
            record = dataclasses.replace(
                record,
                verdict="release",
                kept_ms=round((now - routed.decided) * 1000, 3),
            )
        out.records.append(record)

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
                out.extend(
                    self.receive(port_name, frame, now, arrival=arrival, csum_not_ready=not_ready)
                )
        return out

    def express_failed(self, lane: ExpressLane, now: float) -> Output:
        """Installing failed (and what may have been installed was removed):
        forget the lane, keep forwarding in the proxy."""
        return self.express_done(lane, "remove", now)

    def express_allowed(self) -> bool:
        """No rule could want a data or pure-ACK segment, and nothing is paced."""
        if not self.express_enabled or self.engine.pace:
            return False
        return all(r.match.tag not in _LANE_TAGS for r in self.engine.rules)

    def express_recall(self) -> Output:
        """Rules changed so that data matters again: take every connection back."""
        out = Output()
        if self.express_allowed():
            return out
        for lane in self.lanes.values():
            if lane.state != "leaving":
                lane.state = "leaving"
                out.express_remove.append(lane)
        return out

    def _maybe_express(self, tagged: flowsmod.Tagged, now: float, out: Output) -> None:
        flow = tagged.flow
        key = (flow.client, flow.server)
        if (
            not flow.handshake_done
            or flow.reset
            or flow.first_fin is not None
            or key in self.lanes
            or len(self.lanes) >= MAX_EXPRESS
            or not self.express_allowed()
        ):
            return
        # the kernel lane keeps Ethernet headers: only with mirrored MACs
        front, back = self.ports[self.front], self.ports[self.back]
        client_mac = self.neighbours.lookup(self.front, flow.client[0], now)
        server_mac = self.neighbours.lookup(self.back, flow.server[0], now)
        if client_mac != back.mac or server_mac != front.mac:
            return
        used = {lane.slot for lane in self.lanes.values()}
        slot = next(i for i in range(MAX_EXPRESS + 1) if i not in used)
        lane = ExpressLane(slot, flow.client, flow.server)
        self.lanes[key] = lane
        self.counters["express_connections"] += 1
        out.express_add.append(lane)

    def next_wakeup(self) -> float | None:
        """When :meth:`tick` has something to do next (None: nothing pending)."""
        times = [t for t in (self.delayed.next_due(), self.neighbours.next_due()) if t is not None]
        return min(times, default=None)

    # --- internals -----------------------------------------------------------

    def _judge(
        self,
        parsed: wire.Frame,
        tcp: wire.Tcp,
        routed: _Routed,
        port_name: str,
        now: float,
        arrival: float,
        out: Output,
    ) -> None:
        ip = parsed.ip
        assert ip is not None
        counters = self.counters
        counters["segments"] += 1
        tagged = self.flows.classify(
            (ip.src, tcp.src_port),
            (ip.dst, tcp.dst_port),
            tcp.flags,
            tcp.seq,
            tcp.ack,
            tcp.payload_len,
            now,
        )
        verdict = self.engine.decide(tagged, now)
        action = verdict.action
        send_at = verdict.send_at if verdict.send_at is not None else now
        delayed = send_at > now
        log = self.log_segments == "all" or (
            self.log_segments == "control"
            and (
                action != "pass"
                or verdict.rule is not None
                or not CONTROL_TAGS.isdisjoint(tagged.tags)
            )
        )
        # the record is built only when someone reads it: the log, the
        # capture's comments, or a held or delayed segment's later "release"
        if log or self.describe_every_segment or action != "pass":
            record = segment_record(
                tagged, action, verdict.rule, send_at - now if delayed else None, arrival
            )
            routed.segment = record
            routed.decided = now
            out.segment = record
            if log:
                if action in ("pass", "duplicate") and delayed:
                    routed.log_on_departure = "as_is"  # paced: logged when it leaves
                else:
                    out.records.append(record)
                    if action in ("delay", "hold"):
                        routed.log_on_departure = "release"
        if action == "pass" and not delayed and self.express_enabled:
            self._maybe_express(tagged, now, out)
        if action in ("pass", "delay", "duplicate"):
            copies = 2 if action == "duplicate" else 1
            if action != "pass":
                counters["delayed" if action == "delay" else "duplicated"] += 1
            for i in range(copies):
                # the copy travels with the original but is logged once
                item = (
                    routed
                    if i == 0
                    else dataclasses.replace(
                        routed, frame=bytearray(routed.frame), log_on_departure="no"
                    )
                )
                if delayed:
                    self._delay(item, send_at, now, arrival, out)
                else:
                    self._send_routed(item, now, arrival, out)
        elif action == "drop":
            counters["dropped_rule"] += 1
        elif action == "hold":
            counters["held"] += 1
            if not self.held.hold(routed, verdict.rule or "hold"):
                counters["dropped_queue_full"] += 1
                if (suppressed := self.drop_log.admit("queue_full", now)) is not None:
                    out.records.append(
                        FrameDropped(
                            ts=arrival,
                            reason="queue_full",
                            conn=tagged.conn,
                            detail="hold queue",
                            suppressed=suppressed or None,
                        )
                    )
        elif action == "reset":
            counters["resets_injected"] += 1
            self._inject_resets(
                parsed, tcp, tagged, routed, port_name, verdict.rule, now, arrival, out
            )

    def _delay(
        self, routed: _Routed, send_at: float, now: float, arrival: float, out: Output
    ) -> None:
        if not self.delayed.push(routed, send_at):
            self.counters["dropped_queue_full"] += 1
            if (suppressed := self.drop_log.admit("queue_full", now)) is not None:
                record = routed.segment
                out.records.append(
                    FrameDropped(
                        ts=arrival,
                        reason="queue_full",
                        conn=record.conn if record is not None else None,
                        detail="delay queue",
                        suppressed=suppressed or None,
                    )
                )

    def _send_routed(self, routed: _Routed, now: float, wall: float, out: Output) -> None:
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
                self.counters["dropped_unresolved"] += 1
                if (suppressed := self.drop_log.admit("unresolved", now)) is not None:
                    out.records.append(
                        FrameDropped(
                            ts=wall,
                            reason="unresolved",
                            port=routed.port,
                            dst=routed.next_hop,
                            frames=1,
                            detail=refused,
                            suppressed=suppressed or None,
                        )
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

    def _inject_resets(
        self,
        parsed: wire.Frame,
        tcp: wire.Tcp,
        tagged: flowsmod.Tagged,
        routed: _Routed,
        in_port: str,
        rule: str | None,
        now: float,
        arrival: float,
        out: Output,
    ) -> None:
        """Drop the segment; send an in-window RST to each end instead.

        Each RST carries exactly the sequence number its receiver expects
        next (the dropped segment's own seq; the ack the sender sent), so it
        is taken at once (RFC 5961 §3.2: an RST whose sequence number is not
        exactly RCV.NXT only earns a challenge ACK)."""
        ip = parsed.ip
        assert ip is not None
        flow = tagged.flow
        back = "s2c" if tagged.dir == "c2s" else "c2s"
        # The receiver never got this segment: it expects exactly its seq.
        # The sender expects what it acknowledges (or the peer's next seq).
        toward_receiver_seq = tcp.seq
        toward_sender_seq = tcp.ack if tcp.flags & wire.ACK else (flow.next_seq(back) or 0)
        # the RST back acknowledges the whole segment (a SYN's too: a SYN_SENT
        # socket takes an RST only if it acknowledges the SYN, RFC 9293 §3.10.7.3)
        segment_end = (
            tcp.seq + tcp.payload_len + (1 if tcp.flags & (wire.SYN | wire.FIN) else 0)
        ) & 0xFFFFFFFF
        rst_ack = wire.RST | wire.ACK
        # toward the receiver, from the sender's address, through the egress
        forward_rst = wire.build_tcp_frame(
            b"\0" * 6,
            b"\0" * 6,
            ip.src,
            ip.dst,
            tcp.src_port,
            tcp.dst_port,
            toward_receiver_seq,
            toward_sender_seq,
            rst_ack,
        )
        # back toward the sender, from the receiver's address, the way it came
        backward_rst = wire.build_tcp_frame(
            self.ports[in_port].mac,
            bytes(parsed.eth.src),
            ip.dst,
            ip.src,
            tcp.dst_port,
            tcp.src_port,
            toward_sender_seq,
            segment_end,
            rst_ack,
        )
        for src, dst, seq, ack in (
            (
                (ip.src, tcp.src_port),
                (ip.dst, tcp.dst_port),
                toward_receiver_seq,
                toward_sender_seq,
            ),
            (
                (ip.dst, tcp.dst_port),
                (ip.src, tcp.src_port),
                toward_sender_seq,
                toward_receiver_seq,
            ),
        ):
            injected = self.flows.classify(src, dst, rst_ack, seq, ack, 0, now)
            out.records.append(segment_record(injected, "inject", rule, None, arrival))
        toward_receiver, toward_sender = out.records[-2], out.records[-1]
        assert isinstance(toward_receiver, Segment) and isinstance(toward_sender, Segment)
        self._send_routed(
            _Routed(routed.port, routed.next_hop, bytearray(forward_rst)), now, arrival, out
        )
        out.frames.append((in_port, backward_rst))
        # for the capture: the frames the proxy made, with their records
        out.injected.append((routed.port, forward_rst, toward_receiver))
        out.injected.append((in_port, backward_rst, toward_sender))


def segment_record(
    tagged: flowsmod.Tagged,
    verdict: Verdict,
    rule: str | None,
    delay: float | None,
    arrival: float,
) -> Segment:
    """The ``segment`` record of a tagged segment that arrived at ``arrival``."""
    return Segment(
        ts=arrival,
        conn=tagged.conn,
        dir=tagged.dir,
        flags=tagged.flags,
        seq=tagged.seq,
        ack=tagged.ack,
        rseq=tagged.rseq,
        rack=tagged.rack,
        len=tagged.len,
        tags=tagged.tags,
        verdict=verdict,
        rule=rule,
        delay_ms=round(delay * 1000, 3) if delay is not None else None,
        conn_number=tagged.conn_number,
    )


def stamp_sent(records: list[Record], sent: float) -> list[Record]:
    """``records`` with ``sent_ts`` set on the segments that leave now (the
    shell calls this with the time it put them on the wire)."""
    return [
        dataclasses.replace(r, sent_ts=sent)
        if isinstance(r, Segment) and r.sent_ts is None and r.verdict in _SENT_NOW
        else r
        for r in records
    ]


_IPV4_TTL = 8
_IPV4_CHECKSUM = 10
_IPV6_HOP_LIMIT = 7
_H = struct.Struct("!H")


def _decrement_hop_limit(buf: bytearray, parsed: wire.Frame) -> bool:
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
