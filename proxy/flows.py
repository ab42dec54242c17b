"""Per-connection tracking: which role each TCP segment plays (sans-IO).

The middlebox's rules say "drop the first SYN-ACK" or "delay the client's
FIN", so every segment must be named by its role in its connection.
:class:`FlowTable` follows each connection by its 4-tuple and tags each
segment with one or more of :data:`TAGS`.  The client is the side that sent
the first SYN.

Tags, exactly
-------------

``syn``
    SYN without ACK: the first segment of the handshake (and its retransmits).
``syn-ack``
    SYN with ACK: the second.
``handshake-ack``
    The client's first segment that acknowledges the server's SYN
    (ack = server ISN + 1) without SYN: the third segment of the handshake.
    If it carries data it is also ``data``.
``data``
    The segment carries payload (``len`` > 0).  A FIN with data is ``data``
    and ``fin``.
``ack``
    A pure acknowledgment: ACK set, no payload, no SYN, FIN or RST, and not
    one of ``handshake-ack``, ``fin-ack``, ``last-ack``.
``fin``
    FIN set.
``fin-ack``
    A side's first segment whose ack acknowledges the peer's FIN
    (ack = peer's FIN sequence + 1).  When the server closes at once, Linux
    sends its FIN on the same segment as the ACK of the client's FIN: that
    one segment is ``fin`` and ``fin-ack``.
``last-ack``
    The segment that acknowledges the *second* FIN of the connection — the
    one that reached the middlebox later.  It is always ``fin-ack`` too.
    In a simultaneous close (both FINs cross, neither acknowledging the
    other), the FIN that arrived second is the second FIN: the segment that
    acknowledges the first FIN is ``fin-ack``, the one that acknowledges the
    second is ``fin-ack`` and ``last-ack``.
``rst``
    RST set, in any state: a refused connection (RST+ACK answering a SYN),
    an abortive close, an injected reset.
``retransmit``
    The segment carries sequence space already seen in its direction: a SYN
    or SYN-ACK again, a FIN again, or payload that starts below the highest
    sequence number seen.  A pure ACK that acknowledges an already
    acknowledged FIN again (a client in TIME_WAIT answering a retransmitted
    FIN) is tagged with its role again (``fin-ack``, or ``fin-ack`` and
    ``last-ack``) plus ``retransmit``.  Other duplicate pure ACKs are just
    ``ack``.

A new SYN (a different ISN) on a 4-tuple whose connection is over (both
FINs acknowledged, or reset) or was never established starts a new
connection with its own number and fresh rule counters.

Relative sequence numbers are counted from each side's ISN, like Wireshark:
a SYN has ``rseq`` 0, the SYN-ACK ``rseq`` 0 and ``rack`` 1.  A connection
first seen in the middle (the proxy started late) takes the first segment's
sequence number minus one as the sender's ISN (and the ack number minus one
as the peer's), so its numbers still start at 1; the client is then the
side with the higher port (servers listen on the lower one).

Memory is bounded: at most ``max_flows`` connections (the least recently
seen is evicted, and counted), idle ones expire after ``idle_timeout``,
finished ones :data:`CLOSED_GRACE` seconds after they finished.
"""

from __future__ import annotations

import collections
from typing import Literal, NamedTuple

from core import events
from core.rules import TAGS
from proxy.wire import ACK, FIN, RST, SYN, flags_text

TCP_TIMEWAIT_LEN = 60.0
"""include/net/tcp.h: how long TIME_WAIT lasts (60 s)."""
CLOSED_GRACE = 2 * TCP_TIMEWAIT_LEN
"""A finished connection is remembered this long, so retransmitted FINs and
re-ACKs from TIME_WAIT are still tagged with their roles."""

SEQ_MOD = 1 << 32
Direction = Literal["c2s", "s2c"]
Endpoint = tuple[str, int]


def seq_lt(a: int, b: int) -> bool:
    """``a`` before ``b`` in sequence space (RFC 9293 §3.4, modulo 2^32)."""
    return 0 < (b - a) % SEQ_MOD < SEQ_MOD // 2


class _Side:
    """What one direction has sent."""

    __slots__ = ("fin_acked", "fin_seq", "isn", "last_ack", "next_seq", "syn_seen")

    def __init__(self) -> None:
        self.isn: int | None = None
        self.next_seq: int | None = None
        """Highest sequence number sent + 1 (SYN and FIN count one)."""
        self.fin_seq: int | None = None
        """Sequence number of this side's FIN."""
        self.fin_acked = False
        self.last_ack: int | None = None
        self.syn_seen = False


class Flow:
    """One connection."""

    __slots__ = (
        "client",
        "closed_at",
        "conn",
        "counters",
        "first_fin",
        "handshake_done",
        "last_seen",
        "number",
        "reset",
        "server",
        "sides",
    )

    def __init__(self, client: Endpoint, server: Endpoint, number: int, now: float) -> None:
        self.client = client
        self.server = server
        self.number = number
        self.conn = events.conn_id(client[0], client[1], server[0], server[1])
        self.sides: dict[str, _Side] = {"c2s": _Side(), "s2c": _Side()}
        self.handshake_done = False
        self.first_fin: str | None = None
        self.reset = False
        self.closed_at: float | None = None
        self.last_seen = now
        self.counters: dict[str, int] = {}
        """Free for the rule engine's per-connection counts; dies with the flow."""

    @property
    def finished(self) -> bool:
        return self.closed_at is not None

    def next_seq(self, direction: str) -> int | None:
        """The next sequence number ``direction``'s sender would use."""
        return self.sides[direction].next_seq

    def acked_by(self, direction: str) -> int | None:
        """The latest ack number ``direction``'s sender sent."""
        return self.sides[direction].last_ack


class Tagged(NamedTuple):
    """One segment with its roles."""

    flow: Flow
    conn: str
    conn_number: int
    dir: Direction
    tags: tuple[str, ...]
    flags: str
    seq: int
    ack: int
    rseq: int
    rack: int
    len: int

    @property
    def counters(self) -> dict[str, int]:
        return self.flow.counters


_ORDER = {tag: i for i, tag in enumerate(TAGS)}
_ROLE_ACKS = frozenset({"handshake-ack", "fin-ack", "last-ack"})
"""Acknowledgments with a role of their own: never plain ``ack`` as well."""


class FlowTable:
    """Every connection seen, by 4-tuple (both directions)."""

    def __init__(self, *, max_flows: int = 65536, idle_timeout: float = 300.0) -> None:
        if max_flows < 1:
            raise ValueError("max_flows must be at least 1")
        self.max_flows = max_flows
        self.idle_timeout = idle_timeout
        self._index: dict[tuple[Endpoint, Endpoint], Flow] = {}
        self._lru: collections.OrderedDict[tuple[Endpoint, Endpoint], Flow] = (
            collections.OrderedDict()
        )
        self._numbers = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._lru)

    def get(self, src: Endpoint, dst: Endpoint) -> Flow | None:
        return self._index.get((src, dst))

    def classify(
        self,
        src: Endpoint,
        dst: Endpoint,
        flags: int,
        seq: int,
        ack: int,
        payload_len: int,
        now: float,
    ) -> Tagged:
        """Tag one segment (and update its connection)."""
        flow = self._flow_for(src, dst, flags, seq, now)
        direction: Direction = "c2s" if src == flow.client else "s2c"
        segment = _Segment(flow, direction, flags, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, payload_len)
        # each step only where it applies, in this order: later ones read what earlier ones learned
        if segment.me.isn is None or segment.peer.isn is None:
            _learn_isns(segment)
        if segment.syn or not flow.handshake_done:
            _tag_handshake(segment)
        if payload_len:
            _tag_data(segment)
        if segment.fin:
            _tag_fin(segment)
        if segment.has_ack:
            _tag_ack(segment)
        if segment.rst:
            _tag_reset(segment)
        _advance(segment, now)
        return segment.tagged()

    def _flow_for(self, src: Endpoint, dst: Endpoint, flags: int, seq: int, now: float) -> Flow:
        """The connection a segment from ``src`` to ``dst`` belongs to: the one
        known, or a new one — also when a new SYN from the client (a different
        ISN) reuses the 4-tuple of a connection that is over."""
        flow = self._index.get((src, dst))
        if flow is not None and flags & SYN and not flags & ACK and src == flow.client:
            client_side = flow.sides["c2s"]
            if flow.finished or (client_side.isn is not None and seq != client_side.isn):
                self._remove(flow)
                flow = None
        if flow is None:
            flow = self._new_flow(src, dst, flags)
        flow.last_seen = now
        self._lru.move_to_end((flow.client, flow.server))
        return flow

    def expire(self, now: float) -> list[Flow]:
        """Forget idle connections and finished ones past their grace time."""
        gone = [
            flow
            for flow in self._lru.values()
            if now - flow.last_seen > self.idle_timeout
            or (flow.closed_at is not None and now - flow.closed_at > CLOSED_GRACE)
        ]
        for flow in gone:
            self._remove(flow)
        return gone

    def _new_flow(self, src: Endpoint, dst: Endpoint, flags: int) -> Flow:
        if flags & SYN and not flags & ACK:
            client, server = src, dst
        elif flags & SYN:
            client, server = dst, src
        elif src[1] > dst[1] or (src[1] == dst[1] and src <= dst):
            client, server = src, dst  # servers listen on the lower port
        else:
            client, server = dst, src
        while len(self._lru) >= self.max_flows:
            _, oldest = self._lru.popitem(last=False)
            self._index.pop((oldest.client, oldest.server), None)
            self._index.pop((oldest.server, oldest.client), None)
            self.evicted += 1
        self._numbers += 1
        flow = Flow(client, server, self._numbers, 0.0)
        self._lru[(client, server)] = flow
        self._index[(client, server)] = flow
        self._index[(server, client)] = flow
        return flow

    def _remove(self, flow: Flow) -> None:
        self._lru.pop((flow.client, flow.server), None)
        if self._index.get((flow.client, flow.server)) is flow:
            del self._index[(flow.client, flow.server)]
        if self._index.get((flow.server, flow.client)) is flow:
            del self._index[(flow.server, flow.client)]


# --- the tagging rules, one role at a time -----------------------------------------


class _Segment:
    """One segment while it is tagged: its numbers, its connection's two
    sides as this segment's sender sees them, and the tags so far."""

    __slots__ = (
        "ack",
        "direction",
        "fin",
        "flags",
        "flow",
        "has_ack",
        "length",
        "me",
        "peer",
        "rst",
        "seg_len",
        "seq",
        "syn",
        "tags",
    )

    def __init__(
        self, flow: Flow, direction: Direction, flags: int, seq: int, ack: int, length: int
    ) -> None:
        self.flow = flow
        self.direction = direction
        self.me = flow.sides[direction]
        self.peer = flow.sides["s2c" if direction == "c2s" else "c2s"]
        self.flags = flags
        self.seq = seq
        self.ack = ack
        self.length = length
        self.syn = flags & SYN
        self.fin = flags & FIN
        self.rst = flags & RST
        self.has_ack = flags & ACK
        # SEG.LEN, RFC 9293 §3.4: SYN and FIN take a sequence number each
        self.seg_len = length + (1 if self.syn else 0) + (1 if self.fin else 0)
        self.tags: list[str] = []

    def retransmit(self) -> None:
        """It carries sequence space this side has sent before (tagged once)."""
        if "retransmit" not in self.tags:
            self.tags.append("retransmit")

    def tagged(self) -> Tagged:
        tags = self.tags
        if len(tags) > 1:
            tags.sort(key=_ORDER.__getitem__)
        isn, peer_isn = self.me.isn, self.peer.isn
        assert isn is not None  # _learn_isns gave every sender one
        rack = (self.ack - peer_isn) % SEQ_MOD if self.has_ack and peer_isn is not None else 0
        return Tagged(
            self.flow,
            self.flow.conn,
            self.flow.number,
            self.direction,
            tuple(tags),
            flags_text(self.flags),
            self.seq,
            self.ack,
            (self.seq - isn) % SEQ_MOD,
            rack,
            self.length,
        )


def _learn_isns(s: _Segment) -> None:
    """A side's first segment gives its ISN: a SYN's own sequence number, or,
    mid-stream, as if the SYN had come just before (and what the segment
    acknowledges gives the peer's, when the peer has not been seen)."""
    me, peer = s.me, s.peer
    if me.isn is None:
        me.isn = s.seq if s.syn else (s.seq - 1) % SEQ_MOD
        me.next_seq = me.isn + 1 if not s.syn else s.seq
    if peer.isn is None and s.has_ack and not s.syn:
        peer.isn = (s.ack - 1) % SEQ_MOD
        peer.next_seq = s.ack


def _tag_handshake(s: _Segment) -> None:
    """``syn`` or ``syn-ack`` (a second one from a side is a retransmission),
    and the client's ``handshake-ack``: its first segment acknowledging the
    server's SYN."""
    if s.syn:
        s.tags.append("syn-ack" if s.has_ack else "syn")
        if s.me.syn_seen:
            s.retransmit()
        s.me.syn_seen = True
    elif s.has_ack and s.direction == "c2s" and not s.flow.handshake_done:
        server = s.flow.sides["s2c"]
        if server.syn_seen and server.isn is not None and s.ack == (server.isn + 1) % SEQ_MOD:
            s.tags.append("handshake-ack")
            s.flow.handshake_done = True


def _tag_data(s: _Segment) -> None:
    """A segment with payload: ``data``; a retransmission when it starts below
    what this side has sent."""
    s.tags.append("data")
    if s.me.next_seq is not None and seq_lt(s.seq, s.me.next_seq):
        s.retransmit()


def _tag_fin(s: _Segment) -> None:
    """A FIN: ``fin``; the side's FIN is remembered (and which side closed
    first), and the same FIN again is a retransmission."""
    s.tags.append("fin")
    fin_seq = (s.seq + s.length) % SEQ_MOD
    if s.me.fin_seq is None:
        s.me.fin_seq = fin_seq
        if s.flow.first_fin is None:
            s.flow.first_fin = s.direction
    elif fin_seq == s.me.fin_seq:
        s.retransmit()


def _tag_ack(s: _Segment) -> None:
    """An ACK: ``fin-ack`` (and ``last-ack`` for the second FIN) when it is the
    first segment acknowledging the peer's FIN, or a pure ACK acknowledging it
    again (from TIME_WAIT, answering a retransmitted FIN), which is also a
    retransmission; ``ack`` when it carries nothing and has no other role."""
    if s.rst:
        return
    peer = s.peer
    acks_fin = peer.fin_seq is not None and s.ack == (peer.fin_seq + 1) % SEQ_MOD
    # a segment that carries more than a re-ACK is tagged by what it carries
    if acks_fin and not (peer.fin_acked and s.seg_len):
        again = peer.fin_acked
        peer.fin_acked = True
        s.tags.append("fin-ack")
        # the peer's FIN was the second one when ours came first
        if s.flow.first_fin == s.direction and s.me.fin_seq is not None:
            s.tags.append("last-ack")
        if again:
            s.retransmit()
    if not s.seg_len and _ROLE_ACKS.isdisjoint(s.tags):
        s.tags.append("ack")


def _tag_reset(s: _Segment) -> None:
    """An RST: ``rst``, in any state; the connection is over."""
    s.tags.append("rst")
    s.flow.reset = True


def _advance(s: _Segment, now: float) -> None:
    """Record what this side has now sent and acknowledged; the connection is
    finished once it is reset or both FINs are acknowledged."""
    me, flow = s.me, s.flow
    end = (s.seq + s.seg_len) % SEQ_MOD
    if not s.rst and (me.next_seq is None or seq_lt(me.next_seq, end)):
        me.next_seq = end
    if s.has_ack:
        me.last_ack = s.ack
    if flow.closed_at is None and (flow.reset or (me.fin_acked and s.peer.fin_acked)):
        flow.closed_at = now
