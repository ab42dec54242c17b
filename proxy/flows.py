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


def seq_le(a: int, b: int) -> bool:
    return a == b or seq_lt(a, b)


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
        syn = flags & SYN
        has_ack = flags & ACK
        flow = self._index.get((src, dst))
        if flow is not None and syn and not has_ack and src == flow.client:
            client_side = flow.sides["c2s"]
            if flow.finished or (client_side.isn is not None and seq != client_side.isn):
                self._remove(flow)
                flow = None
        if flow is None:
            flow = self._new_flow(src, dst, flags)
        flow.last_seen = now
        self._lru.move_to_end((flow.client, flow.server))

        direction: Direction = "c2s" if src == flow.client else "s2c"
        me = flow.sides[direction]
        peer = flow.sides["s2c" if direction == "c2s" else "c2s"]
        tags: list[str] = []
        seq &= 0xFFFFFFFF
        ack &= 0xFFFFFFFF

        if me.isn is None:
            # first segment from this side: a SYN gives the ISN; mid-stream, as
            # if the SYN had come just before
            me.isn = seq if syn else (seq - 1) % SEQ_MOD
            me.next_seq = me.isn + 1 if not syn else seq
        if peer.isn is None and has_ack and not syn:
            peer.isn = (ack - 1) % SEQ_MOD
            peer.next_seq = ack

        if syn:
            tags.append("syn-ack" if has_ack else "syn")
            if me.syn_seen:
                tags.append("retransmit")
            me.syn_seen = True
        elif has_ack and direction == "c2s" and not flow.handshake_done:
            server = flow.sides["s2c"]
            if server.syn_seen and server.isn is not None and ack == (server.isn + 1) % SEQ_MOD:
                tags.append("handshake-ack")
                flow.handshake_done = True
        if payload_len:
            tags.append("data")
            if me.next_seq is not None and seq_lt(seq, me.next_seq) and "retransmit" not in tags:
                tags.append("retransmit")
        fin = flags & FIN
        if fin:
            tags.append("fin")
            fin_seq = (seq + payload_len) % SEQ_MOD
            if me.fin_seq is None:
                me.fin_seq = fin_seq
                if flow.first_fin is None:
                    flow.first_fin = direction
            elif fin_seq == me.fin_seq and "retransmit" not in tags:
                tags.append("retransmit")
        rst = flags & RST
        if has_ack and not rst and peer.fin_seq is not None and ack == (peer.fin_seq + 1) % SEQ_MOD:
            # acknowledges the peer's FIN; the peer's FIN was the second one
            # when ours came first
            second = flow.first_fin == direction and me.fin_seq is not None
            pure = not payload_len and not fin and not syn
            if not peer.fin_acked:
                peer.fin_acked = True
                tags.append("fin-ack")
                if second:
                    tags.append("last-ack")
            elif pure:
                tags.append("fin-ack")
                if second:
                    tags.append("last-ack")
                tags.append("retransmit")
        if (
            has_ack
            and not payload_len
            and not syn
            and not fin
            and not rst
            and not any(t in tags for t in ("handshake-ack", "fin-ack", "last-ack"))
        ):
            tags.append("ack")
        if rst:
            tags.append("rst")
            flow.reset = True

        # advance what this side has sent
        end = (seq + payload_len + (1 if syn else 0) + (1 if fin else 0)) % SEQ_MOD
        if not rst and (me.next_seq is None or seq_lt(me.next_seq, end)):
            me.next_seq = end
        if has_ack:
            me.last_ack = ack
        if flow.closed_at is None and (flow.reset or (me.fin_acked and peer.fin_acked)):
            flow.closed_at = now

        if len(tags) > 1:
            tags.sort(key=_ORDER.__getitem__)
        rseq = (seq - me.isn) % SEQ_MOD
        rack = (ack - peer.isn) % SEQ_MOD if has_ack and peer.isn is not None else 0
        return Tagged(
            flow,
            flow.conn,
            flow.number,
            direction,
            tuple(tags),
            flags_text(flags),
            seq,
            ack,
            rseq,
            rack,
            payload_len,
        )

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
