"""Which role each TCP segment plays in its connection (pure: no I/O).

The middlebox's rules say "drop the first SYN-ACK" or "delay the client's
FIN", so every segment it forwards must be named by its role.
:class:`FlowTable` follows each connection by its addresses and ports and
:meth:`FlowTable.classify` tags each segment with some of :data:`TAGS`.  It
takes plain values (the forwarder parses the frames) and sees segments in the
order they reach the middlebox: "first" and "second" below always mean in
that order.

Client and server
-----------------

The client is the side that sent the first SYN (a SYN without ACK).  When the
table first meets a connection in the middle (the proxy started late, or the
connection was forgotten — see *Memory*): if that first segment is a SYN-ACK,
its destination is the client; otherwise the side with the *higher* port is
taken for the client, since servers listen on the lower one (with equal ports,
the sender of that segment).  The ``conn`` id puts the client first
(:func:`tcplab.events.conn_id`).

Tags, exactly
-------------

A segment may have several tags; they always come in the order of
:data:`TAGS`.

``syn``
    SYN without ACK: the first segment of the handshake (and its
    retransmissions).
``syn-ack``
    SYN with ACK: the second.
``handshake-ack``
    The client's first segment without SYN (and without RST) that
    acknowledges the server's SYN (ack = server ISN + 1): the third segment
    of the handshake.  If it carries data it is also ``data``; if it carries
    a FIN, also ``fin``.  Never given on a connection first seen in the
    middle.
``data``
    The segment carries payload (``len`` > 0).  A FIN with data is ``data``
    and ``fin``.
``ack``
    A pure acknowledgment: ACK set, no payload, no SYN, FIN or RST, and not
    ``handshake-ack``, ``fin-ack`` or ``last-ack``.  Duplicate ACKs, window
    updates and keep-alive probes (Linux sends them with no payload and the
    sequence number one below the next) are ``ack``.
``fin``
    FIN set.
``fin-ack``
    A side's first segment (other than an RST) whose ack acknowledges the
    peer's FIN (ack = sequence number of the FIN + 1).  It may carry more:
    when the server closes at once, Linux sends its FIN on the same segment
    as the ACK of the client's FIN — that one segment is ``fin`` and
    ``fin-ack``.  Later segments of the same side that acknowledge the FIN
    again are not ``fin-ack`` (a window update is ``ack``, data in a
    half-closed connection is ``data``), except a re-acknowledgment, see
    ``retransmit``.
``last-ack``
    A ``fin-ack`` that acknowledges the *second* FIN of the connection, the
    one that reached the middlebox later; it is always ``fin-ack`` too.
    When the client closes first that is the client's final ACK; when the
    server closes first, the server's.  In a simultaneous close the two
    FINs cross and neither acknowledges the other: the FIN that arrived
    second is still "the second FIN", so the segment acknowledging the
    first FIN is ``fin-ack`` and the one acknowledging the second is
    ``fin-ack`` and ``last-ack`` — whatever order those two ACKs arrive in.
``rst``
    RST set, in any state: a refused connection (RST+ACK answering a SYN),
    an abortive close, a reset after the FINs, one the middlebox injected.
    An RST never has ``ack``, ``handshake-ack``, ``fin-ack`` or ``last-ack``
    (even with ACK set) and is never ``retransmit``.
``retransmit``
    The segment carries sequence space its side has sent before: it starts
    below the highest sequence number seen from that side (SYN and FIN
    count one each, like data).  That is a SYN or SYN-ACK again, a FIN
    again, data sent again (wholly or partly: a segment that overlaps what
    was sent, or what the peer already acknowledged).  A retransmitted
    segment keeps the roles of the original: a retransmitted SYN-ACK is
    ``syn-ack`` + ``retransmit``, the server's retransmitted FIN+ACK that
    also acknowledged the client's FIN is ``fin`` + ``fin-ack`` +
    ``retransmit``.  A pure ACK carries no sequence space, yet one is
    ``retransmit`` too when it acknowledges again a SYN or FIN that was
    retransmitted: the client in TIME_WAIT answering the server's
    retransmitted FIN sends ``fin-ack`` + ``last-ack`` + ``retransmit``; a
    server answering a retransmitted FIN from CLOSE_WAIT sends ``fin-ack`` +
    ``retransmit``; a client answering a retransmitted SYN-ACK sends
    ``handshake-ack`` + ``retransmit``.  (At most one such re-ACK per
    retransmission of the SYN or FIN; other duplicate ACKs are ``ack``.)
    A one-byte keep-alive probe (some stacks send one) is ``data`` +
    ``retransmit``.

Relative numbers
----------------

``rseq`` counts from the sender's ISN and ``rack`` from the receiver's, modulo
2^32, like Wireshark: a SYN has ``rseq`` 0, the SYN-ACK ``rseq`` 0 and
``rack`` 1, the handshake's ACK ``rseq`` 1 and ``rack`` 1.  ``rack`` is 0
when ACK is not set.  A SYN-ACK tells the client's ISN too (its ack - 1), so a
connection first seen at its SYN-ACK has exact numbers.  A connection first
seen in the middle has no ISN: its numbers count from where the table started
watching — the sender's side from the first sequence number it saw from that
side, the other side from the first ack number acknowledging it — so the
first segment seen has ``rseq`` 0 and ``rack`` 0 (:attr:`Flow.midstream`
says so).

A new connection on the same addresses
--------------------------------------

A SYN without ACK starts a new connection (a new number, fresh rule
counters) on the same addresses and ports when the old connection is over
(both FINs acknowledged, or an RST seen), or when the sender has sent before
and the SYN's sequence number is not the ISN it used (the old connection is
gone on that side: ``tcp_tw_reuse`` taking a TIME_WAIT port, a restarted
client, a connection first seen in the middle).  A SYN with the old ISN on a
live connection is a retransmission.

Memory
------

At most ``max_flows`` connections are kept; when a new one would exceed that,
the least recently seen is evicted (counted in :attr:`FlowTable.evicted`).
:meth:`FlowTable.expire` forgets a connection idle for more than
``idle_timeout`` seconds, and a closed one (both FINs acknowledged, or an RST
seen) :data:`CLOSED_GRACE` seconds after its last segment.  60 s is the Linux
TIME_WAIT (``TCP_TIMEWAIT_LEN``), and the kernel restarts it each time it
answers a retransmitted FIN: as long as the TIME_WAIT socket can still answer
a retransmitted FIN, its re-ACK is still tagged ``last-ack`` + ``retransmit``
here; after that a segment on those addresses meets a closed socket (and a
new SYN starts a new connection anyway).  A forgotten connection that is
still alive is picked up again in the middle, with a new number.  Per
connection :attr:`Flow.counters` (the rule engine's ``nth`` counts) go with
it.  Times are whatever clock the caller passes as ``now``; it must not go
backwards (``time.monotonic``).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterator
from typing import Final, Literal

from tcplab import events

# --- TCP header control bits (RFC 9293 §3.1; ECE and CWR: RFC 3168 §6.1) -----

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20
ECE: Final = 0x40
CWR: Final = 0x80

TAGS: tuple[str, ...] = (
    "syn",
    "syn-ack",
    "handshake-ack",
    "data",
    "ack",
    "fin",
    "fin-ack",
    "last-ack",
    "rst",
    "retransmit",
)
"""Every tag :meth:`FlowTable.classify` gives, in the order it gives them."""

TCP_TIMEWAIT_LEN: Final = 60.0
"""include/net/tcp.h: how long Linux keeps a socket in TIME_WAIT (60 s)."""
CLOSED_GRACE: Final = TCP_TIMEWAIT_LEN
"""How long a closed connection is remembered after its last segment."""

SEQ_MOD: Final = 1 << 32
_MASK: Final = SEQ_MOD - 1
_HALF: Final = 1 << 31

Direction = Literal["c2s", "s2c"]
Endpoint = tuple[str, int]

# tag bits, in TAGS order: a mask indexes the ready-made tag tuple
_T_SYN: Final = 1 << 0
_T_SYN_ACK: Final = 1 << 1
_T_HANDSHAKE_ACK: Final = 1 << 2
_T_DATA: Final = 1 << 3
_T_ACK: Final = 1 << 4
_T_FIN: Final = 1 << 5
_T_FIN_ACK: Final = 1 << 6
_T_LAST_ACK: Final = 1 << 7
_T_RST: Final = 1 << 8
_T_RETRANSMIT: Final = 1 << 9

_TAG_TUPLES: tuple[tuple[str, ...], ...] = tuple(
    tuple(tag for i, tag in enumerate(TAGS) if mask >> i & 1) for mask in range(1 << len(TAGS))
)

_FLAG_LETTERS = (
    (SYN, "S"),
    (FIN, "F"),
    (RST, "R"),
    (PSH, "P"),
    (ACK, "A"),
    (URG, "U"),
    (ECE, "E"),
    (CWR, "C"),
)
_FLAG_TEXT: tuple[str, ...] = tuple(
    "".join(letter for bit, letter in _FLAG_LETTERS if flags & bit) for flags in range(256)
)


def flags_text(flags: int) -> str:
    """``S``, ``SA``, ``A``, ``FA``, ``PA``, ``FPA``, ``R``, ``RA``…: letters in
    the order S F R P A U E C."""
    return _FLAG_TEXT[flags & 0xFF]


def seq_lt(a: int, b: int) -> bool:
    """``a`` comes before ``b`` in sequence space (modulo 2^32, RFC 1982 style:
    ``b`` is less than 2^31 ahead; exactly 2^31 apart is neither)."""
    return 0 < (b - a) & _MASK < _HALF


def seq_le(a: int, b: int) -> bool:
    """``a`` is ``b`` or comes before it in sequence space."""
    return (b - a) & _MASK < _HALF


class Side:
    """What one direction of a connection has sent, as far as seen."""

    __slots__ = (
        "acked_fin_at",
        "base",
        "fin_acks",
        "fin_order",
        "fin_seq",
        "fins",
        "isn",
        "last_ack",
        "next_seq",
        "syn_acks",
        "syns",
    )

    def __init__(self) -> None:
        self.isn: int | None = None
        """The ISN, from this side's SYN (or the ack of the peer's SYN-ACK)."""
        self.base: int | None = None
        """What relative numbers count from: the ISN, or the first number seen."""
        self.next_seq: int | None = None
        """Highest sequence number sent + 1 (SYN and FIN count one); raised
        also by the peer's acks (what was acknowledged was sent)."""
        self.last_ack: int | None = None
        """Highest ack number this side sent (RSTs left out)."""
        self.syns = 0
        """SYNs (or SYN-ACKs) sent, retransmissions included."""
        self.syn_acks = 0
        """``handshake-ack`` segments the peer sent for this side's SYN."""
        self.fin_seq: int | None = None
        """Sequence number of this side's FIN."""
        self.fin_order = 0
        """1: this side's FIN was the connection's first, 2: the second, 0: none."""
        self.fins = 0
        """FINs sent, retransmissions included."""
        self.fin_acks = 0
        """Segments from the peer tagged ``fin-ack`` for this FIN (re-ACKs too)."""
        self.acked_fin_at: int | None = None
        """Sequence number of this side's ``fin-ack`` segment when it carried
        sequence space (data or FIN), so its retransmission is known."""

    @property
    def fin_acked(self) -> bool:
        return self.fin_acks > 0

    def __repr__(self) -> str:
        return (
            f"Side(isn={self.isn}, next_seq={self.next_seq}, last_ack={self.last_ack},"
            f" fin_seq={self.fin_seq}, fin_order={self.fin_order}, fin_acked={self.fin_acked})"
        )


class Flow:
    """One connection: its endpoints, number, and each direction's state."""

    __slots__ = (
        "c2s",
        "client",
        "closed_at",
        "conn",
        "counters",
        "first_fin",
        "handshake_ack_seq",
        "handshake_done",
        "key",
        "last_seen",
        "midstream",
        "number",
        "reset",
        "s2c",
        "server",
    )

    def __init__(
        self, client: Endpoint, server: Endpoint, number: int, now: float, *, midstream: bool
    ) -> None:
        self.client = client
        self.server = server
        self.key = (client, server)
        self.number = number
        """1, 2…: the order in which the table first saw its connections."""
        self.conn = events.conn_id(client[0], client[1], server[0], server[1])
        self.c2s = Side()
        self.s2c = Side()
        self.midstream = midstream
        """First seen without a SYN: relative numbers count from what was seen."""
        self.handshake_done = midstream
        """The handshake's ACK was seen (or the connection was met after it)."""
        self.handshake_ack_seq: int | None = None
        self.first_fin: Direction | None = None
        """Which direction's FIN reached the middlebox first."""
        self.reset = False
        """An RST was seen."""
        self.closed_at: float | None = None
        """When both FINs were acknowledged or an RST seen."""
        self.last_seen = now
        self.counters: dict[str, int] = {}
        """Free for the rule engine's per-connection counts; dies with the flow."""

    @property
    def closed(self) -> bool:
        """Both FINs acknowledged, or an RST seen."""
        return self.closed_at is not None

    def side(self, direction: str) -> Side:
        """The state of ``direction`` (``c2s`` or ``s2c``)."""
        if direction == "c2s":
            return self.c2s
        if direction == "s2c":
            return self.s2c
        raise ValueError(f"direction must be c2s or s2c, not {direction!r}")

    def next_seq(self, direction: str) -> int | None:
        """The next sequence number ``direction``'s sender will use (None:
        unknown).  An RST toward the server takes ``next_seq("c2s")``."""
        return self.side(direction).next_seq

    def acked_by(self, direction: str) -> int | None:
        """The highest ack number ``direction``'s sender sent (None: none yet)."""
        return self.side(direction).last_ack

    def __repr__(self) -> str:
        return f"Flow(#{self.number} {self.conn}, c2s={self.c2s!r}, s2c={self.s2c!r})"


@dataclasses.dataclass(frozen=True, slots=True)
class Tagged:
    """One segment with its roles (the fields of a ``segment`` event)."""

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
        """The connection's rule counters (:attr:`Flow.counters`)."""
        return self.flow.counters


_Entry = tuple[Flow, Side, Side, Direction]
"""What the index holds per direction: flow, sender's side, receiver's side."""


class FlowTable:
    """Every connection seen, by (source, destination) in both directions."""

    def __init__(
        self,
        *,
        max_flows: int = 65536,
        idle_timeout: float = 300.0,
        closed_grace: float = CLOSED_GRACE,
    ) -> None:
        if max_flows < 1:
            raise ValueError(f"max_flows must be at least 1, not {max_flows}")
        self.max_flows = max_flows
        self.idle_timeout = idle_timeout
        self.closed_grace = closed_grace
        self.evicted = 0
        """Connections dropped because the table was full."""
        self._index: dict[tuple[Endpoint, Endpoint], _Entry] = {}
        self._lru: collections.OrderedDict[tuple[Endpoint, Endpoint], Flow] = (
            collections.OrderedDict()
        )
        self._numbers = 0

    def __len__(self) -> int:
        return len(self._lru)

    def __iter__(self) -> Iterator[Flow]:
        """The connections, least recently seen first."""
        return iter(list(self._lru.values()))

    def get(self, src: Endpoint, dst: Endpoint) -> Flow | None:
        """The connection of a segment from ``src`` to ``dst`` (either way)."""
        entry = self._index.get((src, dst))
        return None if entry is None else entry[0]

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
        """Tag one segment and update its connection (see the module doc)."""
        seq &= _MASK
        ack &= _MASK
        syn = flags & SYN
        has_ack = flags & ACK
        rst = flags & RST
        fin = flags & FIN
        entry = self._index.get((src, dst))
        if entry is None:
            entry = self._open(src, dst, syn, has_ack, now)
        elif syn and not has_ack:
            old, sender = entry[0], entry[1]
            if old.closed_at is not None or (sender.base is not None and sender.isn != seq):
                self._remove(old)
                entry = self._open(src, dst, syn, has_ack, now)
        flow, me, peer, direction = entry
        flow.last_seen = now
        self._lru.move_to_end(flow.key)

        # where relative numbers count from
        base = me.base
        if base is None:
            base = me.base = seq
        if syn and me.isn is None:
            me.isn = seq
        peer_base = peer.base
        if has_ack and peer_base is None:
            if syn:  # a SYN-ACK acknowledges the peer's ISN + 1
                peer_base = peer.isn = peer.base = (ack - 1) & _MASK
            else:
                peer_base = peer.base = ack
            if not rst:
                peer.next_seq = ack

        # sequence space: retransmission, and how far this side has sent
        space = payload_len + (1 if syn else 0) + (1 if fin else 0)
        mask = 0
        if not rst:
            nxt = me.next_seq
            if space:
                end = (seq + space) & _MASK
                if nxt is None:
                    me.next_seq = end
                else:
                    if 0 < (nxt - seq) & _MASK < _HALF:
                        mask = _T_RETRANSMIT
                    if 0 < (end - nxt) & _MASK < _HALF:
                        me.next_seq = end
            elif nxt is None or 0 < (seq - nxt) & _MASK < _HALF:
                me.next_seq = seq
            if has_ack:
                if peer.next_seq is not None and 0 < (ack - peer.next_seq) & _MASK < _HALF:
                    peer.next_seq = ack
                last = me.last_ack
                if last is None or 0 < (ack - last) & _MASK < _HALF:
                    me.last_ack = ack
        if payload_len > 0:
            mask |= _T_DATA

        if syn:
            mask |= _T_SYN_ACK if has_ack else _T_SYN
            me.syns += 1
        elif has_ack and not rst and direction == "c2s" and peer.syns:
            server_isn = peer.isn
            if server_isn is not None and ack == (server_isn + 1) & _MASK:
                if not flow.handshake_done:
                    mask |= _T_HANDSHAKE_ACK
                    flow.handshake_done = True
                    flow.handshake_ack_seq = seq if space else None
                    peer.syn_acks = 1
                elif mask & _T_RETRANSMIT:
                    if seq == flow.handshake_ack_seq:
                        mask |= _T_HANDSHAKE_ACK
                elif not space and peer.syns > peer.syn_acks:
                    mask |= _T_HANDSHAKE_ACK | _T_RETRANSMIT
                    peer.syn_acks += 1

        if fin:
            mask |= _T_FIN
            me.fins += 1
            if me.fin_seq is None:
                me.fin_seq = (seq + payload_len + (1 if syn else 0)) & _MASK
                if flow.first_fin is None:
                    flow.first_fin = direction
                    me.fin_order = 1
                else:
                    me.fin_order = 2

        if has_ack and not rst:
            peer_fin = peer.fin_seq
            if peer_fin is not None and ack == (peer_fin + 1) & _MASK:
                role = (_T_FIN_ACK | _T_LAST_ACK) if peer.fin_order == 2 else _T_FIN_ACK
                if not peer.fin_acks:
                    mask |= role
                    peer.fin_acks = 1
                    me.acked_fin_at = seq if space else None
                elif mask & _T_RETRANSMIT:
                    if seq == me.acked_fin_at:
                        mask |= role
                elif not space and peer.fins > peer.fin_acks:
                    mask |= role | _T_RETRANSMIT
                    peer.fin_acks += 1
            if not space and not mask & (_T_HANDSHAKE_ACK | _T_FIN_ACK):
                mask |= _T_ACK

        if rst:
            mask |= _T_RST
            flow.reset = True
            if flow.closed_at is None:
                flow.closed_at = now
        elif flow.closed_at is None and me.fin_acks and peer.fin_acks:
            flow.closed_at = now

        return Tagged(
            flow,
            flow.conn,
            flow.number,
            direction,
            _TAG_TUPLES[mask],
            _FLAG_TEXT[flags & 0xFF],
            seq,
            ack,
            (seq - base) & _MASK,
            (ack - peer_base) & _MASK if has_ack and peer_base is not None else 0,
            payload_len,
        )

    def expire(self, now: float) -> list[Flow]:
        """Forget connections idle for more than ``idle_timeout`` and closed
        ones quiet for more than ``closed_grace``; return them."""
        idle, grace = self.idle_timeout, self.closed_grace
        horizon = min(idle, grace)
        gone: list[Flow] = []
        for flow in self._lru.values():  # least recently seen first
            quiet = now - flow.last_seen
            if quiet <= horizon:
                break
            if quiet > idle or (flow.closed_at is not None and quiet > grace):
                gone.append(flow)
        for flow in gone:
            self._remove(flow)
        return gone

    def _open(self, src: Endpoint, dst: Endpoint, syn: int, has_ack: int, now: float) -> _Entry:
        """A new connection for a segment from ``src`` to ``dst``."""
        # a SYN comes from the client, a SYN-ACK goes to it; without either,
        # servers listen on the lower port
        sender_is_client = not has_ack if syn else src[1] >= dst[1]
        client, server = (src, dst) if sender_is_client else (dst, src)
        lru = self._lru
        while len(lru) >= self.max_flows:
            _, oldest = lru.popitem(last=False)
            self._unindex(oldest)
            self.evicted += 1
        self._numbers += 1
        flow = Flow(client, server, self._numbers, now, midstream=not syn)
        lru[flow.key] = flow
        forward: _Entry = (flow, flow.c2s, flow.s2c, "c2s")
        backward: _Entry = (flow, flow.s2c, flow.c2s, "s2c")
        self._index[(client, server)] = forward
        self._index[(server, client)] = backward
        return forward if sender_is_client else backward

    def _remove(self, flow: Flow) -> None:
        if self._lru.get(flow.key) is flow:
            del self._lru[flow.key]
        self._unindex(flow)

    def _unindex(self, flow: Flow) -> None:
        for key in (flow.key, (flow.server, flow.client)):
            entry = self._index.get(key)
            if entry is not None and entry[0] is flow:
                del self._index[key]
