"""The named cause-before-effect rules: which records of one connection
must have happened before which (pure).

A rule pairs two facts that cause one another on one connection: the
kernel changes state, then sends; a segment arrives, then the receiving
kernel changes state; a program calls, then its kernel acts.  :func:`links`
finds every such pair in a run's records, by rule name; whether a pair is
in order, given how exactly each record knows its time, is
:mod:`tcplab.causality`'s business.  The rules are written here, apart from
that, so that adding one is a change to this module alone.

Rules (``X`` is a side, client or server; "at the middlebox" is the
segment's arrival there; "delivered" means it went on toward its receiver):

``syn_sent_before_syn``
    the client enters SYN_SENT before its first SYN is at the middlebox.
``connect_before_syn_sent``
    ``connect()`` is called before the client enters SYN_SENT.
``syn_before_syn_recv``
    a delivered SYN is at the middlebox before the server enters SYN_RECV.
``syn_recv_before_syn_ack``
    the server enters SYN_RECV before its first SYN-ACK is at the middlebox.
``syn_ack_before_established``
    a delivered SYN-ACK is at the middlebox before the client goes
    SYN_SENT → ESTABLISHED.
``established_before_handshake_ack``
    the client goes SYN_SENT → ESTABLISHED before its first ACK of the
    SYN-ACK is at the middlebox.
``ack_before_established``
    a delivered ACK from the client (no SYN) is at the middlebox before the
    server goes SYN_RECV → ESTABLISHED.
``fin_before_fin_received``
    the peer's first delivered FIN is at the middlebox before X enters
    CLOSE_WAIT or CLOSING, or TIME_WAIT straight from FIN_WAIT1/FIN_WAIT2.
``fin_before_eof``
    ... and before X's program reads end-of-stream;
``fin_received_before_its_ack``
    X's state change on that FIN comes before X's first segment
    acknowledging it at the middlebox (the kernel changes state, then acks).
``ack_of_fin_before_fin_acked``
    a delivered segment of the peer acknowledging X's FIN is at the
    middlebox before X goes FIN_WAIT1 → FIN_WAIT2, CLOSING → TIME_WAIT, or
    LAST_ACK → CLOSED.
``close_before_fin``
    X's ``close()`` or ``shutdown()`` comes before X's first FIN at the
    middlebox,
``close_before_fin_state``
    ... and before X enters FIN_WAIT1 or LAST_ACK,
``fin_state_before_fin``
    which comes before X's first FIN at the middlebox.
``abort_before_rst``
    an abortive ``close()`` (SO_LINGER 0) comes before X's first RST at the
    middlebox.
``send_reset_before_rst``
    the kernel's ``tcp_send_reset`` on X comes before X's next RST at the
    middlebox (tracepoints only).
``rst_before_reset_received``
    a delivered RST toward X is at the middlebox before X's kernel reports
    receiving one (``tcp_receive_reset``), and before X's connection then
    goes to CLOSED.
``retransmit_before_segment``
    the kernel's retransmission on X (``tcp_retransmit_skb`` /
    ``tcp_retransmit_synack``) comes before X's next retransmitted segment
    at the middlebox (tracepoints only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import TypeVar

from core.events import (
    APP_CLOSE,
    APP_CONNECT,
    APP_RECV,
    APP_SHUTDOWN,
    App,
    Record,
    Segment,
    TcpReset,
    TcpRetransmit,
    TcpState,
    is_connection,
)

RULES: tuple[str, ...] = (
    "syn_sent_before_syn",
    "connect_before_syn_sent",
    "syn_before_syn_recv",
    "syn_recv_before_syn_ack",
    "syn_ack_before_established",
    "established_before_handshake_ack",
    "ack_before_established",
    "fin_before_fin_received",
    "fin_before_eof",
    "fin_received_before_its_ack",
    "ack_of_fin_before_fin_acked",
    "close_before_fin",
    "close_before_fin_state",
    "fin_state_before_fin",
    "abort_before_rst",
    "send_reset_before_rst",
    "rst_before_reset_received",
    "retransmit_before_segment",
)
SIDES = ("client", "server")


@dataclasses.dataclass(frozen=True, slots=True)
class Link:
    """``cause`` must come before ``effect`` by rule ``rule``."""

    rule: str
    cause: Record
    effect: Record


# --- finding the pairs -----------------------------------------------------------


def _dir_of(side: str) -> str:
    return "c2s" if side == "client" else "s2c"


def _peer(side: str) -> str:
    return "server" if side == "client" else "client"


class _Conn:
    """One connection's records, by kind and side."""

    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.states: dict[str, list[TcpState]] = {"client": [], "server": []}
        self.apps: dict[str, list[App]] = {"client": [], "server": []}
        self.resets: dict[str, list[TcpReset]] = {"client": [], "server": []}
        self.retransmits: dict[str, list[TcpRetransmit]] = {"client": [], "server": []}


def _group(records: Iterable[Record]) -> dict[str, _Conn]:
    conns: dict[str, _Conn] = {}
    for r in records:
        conn = getattr(r, "conn", None)
        if not isinstance(conn, str) or not is_connection(conn):
            continue
        c = conns.setdefault(conn, _Conn())
        if isinstance(r, Segment):
            c.segments.append(r)
        elif r.component in SIDES:
            if isinstance(r, TcpState):
                c.states[r.component].append(r)
            elif isinstance(r, App):
                c.apps[r.component].append(r)
            elif isinstance(r, TcpReset):
                c.resets[r.component].append(r)
            elif isinstance(r, TcpRetransmit):
                c.retransmits[r.component].append(r)
    for c in conns.values():
        c.segments.sort(key=lambda s: s.ts)
    return conns


T = TypeVar("T")


def _first(items: Iterable[T]) -> T | None:
    return next(iter(items), None)


def links(records: Sequence[Record]) -> list[Link]:
    """Every cause-effect pair the rules name, in the run's records."""
    out: list[Link] = []
    for c in _group(records).values():
        out += _handshake(c)
        for side in SIDES:
            out += _teardown(c, side)
            out += _resets(c, side)
            out += _retransmits(c, side)
    return out


def _entered(states: list[TcpState], new: str, old: str | None = None) -> TcpState | None:
    return _first(s for s in states if s.new == new and (old is None or s.old == old))


def _handshake(c: _Conn) -> list[Link]:
    out: list[Link] = []
    client, server = c.states["client"], c.states["server"]
    syn = _first(s for s in c.segments if s.dir == "c2s" and "S" in s.flags and "A" not in s.flags)
    syn_sent = _entered(client, "SYN_SENT")
    if syn_sent is not None and syn is not None:
        out.append(Link("syn_sent_before_syn", syn_sent, syn))
    connect = _first(a for a in c.apps["client"] if a.kind == APP_CONNECT)
    if connect is not None and syn_sent is not None:
        out.append(Link("connect_before_syn_sent", connect, syn_sent))
    delivered_syn = _first(
        s
        for s in c.segments
        if s.dir == "c2s" and "S" in s.flags and "A" not in s.flags and s.delivered
    )
    syn_recv = _entered(server, "SYN_RECV")
    if delivered_syn is not None and syn_recv is not None:
        out.append(Link("syn_before_syn_recv", delivered_syn, syn_recv))
    syn_ack = _first(
        s
        for s in c.segments
        if s.dir == "s2c" and "S" in s.flags and "A" in s.flags and s.delivered
    )
    first_syn_ack = _first(
        s for s in c.segments if s.dir == "s2c" and "S" in s.flags and "A" in s.flags
    )
    if (
        syn_recv is not None
        and first_syn_ack is not None
        and not _born_at_the_ack(syn_recv, first_syn_ack)
    ):
        out.append(Link("syn_recv_before_syn_ack", syn_recv, first_syn_ack))
    established = _entered(client, "ESTABLISHED", "SYN_SENT")
    if syn_ack is not None and established is not None:
        out.append(Link("syn_ack_before_established", syn_ack, established))
    first_ack = _first(
        s for s in c.segments if s.dir == "c2s" and "A" in s.flags and "S" not in s.flags
    )
    if established is not None and first_ack is not None:
        out.append(Link("established_before_handshake_ack", established, first_ack))
    ack = _first(
        s for s in c.segments if s.dir == "c2s" and "A" in s.flags and "S" not in s.flags
        and s.delivered
    )  # fmt: skip
    server_established = _entered(server, "ESTABLISHED", "SYN_RECV")
    if ack is not None and server_established is not None:
        out.append(Link("ack_before_established", ack, server_established))
    return out


_FIN_RECEIVED = {
    ("ESTABLISHED", "CLOSE_WAIT"),
    ("FIN_WAIT1", "CLOSING"),
    ("FIN_WAIT1", "TIME_WAIT"),
    ("FIN_WAIT2", "TIME_WAIT"),
}
_FIN_ACKED = {("FIN_WAIT1", "FIN_WAIT2"), ("CLOSING", "TIME_WAIT"), ("LAST_ACK", "CLOSED")}


def _teardown(c: _Conn, side: str) -> list[Link]:
    out: list[Link] = []
    mine, theirs = _dir_of(side), _dir_of(_peer(side))
    states = c.states[side]
    peer_fin = _first(s for s in c.segments if s.dir == theirs and "F" in s.flags and s.delivered)
    if peer_fin is not None:
        received = _first(s for s in states if (s.old, s.shown_new) in _FIN_RECEIVED)
        if received is not None:
            out.append(Link("fin_before_fin_received", peer_fin, received))
            end = (peer_fin.seq + peer_fin.len + 1) & 0xFFFFFFFF
            ack = _first(s for s in c.segments if s.dir == mine and "A" in s.flags and s.ack == end)
            if ack is not None:
                out.append(Link("fin_received_before_its_ack", received, ack))
        eof = _first(a for a in c.apps[side] if a.kind == APP_RECV and a.eof)
        if eof is not None:
            out.append(Link("fin_before_eof", peer_fin, eof))
    my_fin = _first(s for s in c.segments if s.dir == mine and "F" in s.flags)
    if my_fin is not None:
        # the peer's first delivered segment whose ack covers our FIN
        end = (my_fin.seq + my_fin.len + 1) & 0xFFFFFFFF
        acked = _first(
            s
            for s in c.segments
            if s.dir == theirs and "A" in s.flags and s.delivered and s.ack == end
            and s.ts >= my_fin.ts
        )  # fmt: skip
        done = _first(
            s for s in states if (s.old, s.shown_new) in _FIN_ACKED and s.source != "inferred"
        )
        if acked is not None and done is not None and _graceful(c, side):
            out.append(Link("ack_of_fin_before_fin_acked", acked, done))
    close = _first(
        a
        for a in c.apps[side]
        if (a.kind == APP_CLOSE and a.how in ("close", None)) or a.kind == APP_SHUTDOWN
    )
    fin_state = _first(s for s in states if s.new in ("FIN_WAIT1", "LAST_ACK"))
    if close is not None and my_fin is not None:
        out.append(Link("close_before_fin", close, my_fin))
    if close is not None and fin_state is not None:
        out.append(Link("close_before_fin_state", close, fin_state))
    if fin_state is not None and my_fin is not None:
        out.append(Link("fin_state_before_fin", fin_state, my_fin))
    return out


def _graceful(c: _Conn, side: str) -> bool:
    """No RST reached ``side``: its way to CLOSED was the ACK of its FIN."""
    toward = _dir_of(_peer(side))
    return not any(s.dir == toward and "R" in s.flags and s.delivered for s in c.segments)


def _resets(c: _Conn, side: str) -> list[Link]:
    out: list[Link] = []
    mine, toward = _dir_of(side), _dir_of(_peer(side))
    abort = _first(a for a in c.apps[side] if a.kind == APP_CLOSE and a.how == "abort")
    my_rsts = [s for s in c.segments if s.dir == mine and "R" in s.flags and s.verdict != "inject"]
    if abort is not None and my_rsts:
        out.append(Link("abort_before_rst", abort, my_rsts[0]))
    for sent in (r for r in c.resets[side] if r.direction == "sent"):
        rst = _first(s for s in my_rsts if s.ts >= sent.ts)
        if rst is not None:
            out.append(Link("send_reset_before_rst", sent, rst))
    received = _first(r for r in c.resets[side] if r.direction == "received")
    rst_in = _first(s for s in c.segments if s.dir == toward and "R" in s.flags and s.delivered)
    if received is not None and rst_in is not None:
        out.append(Link("rst_before_reset_received", rst_in, received))
        closed = _first(s for s in c.states[side] if s.new == "CLOSED" and s.ts >= received.ts)
        if closed is not None:
            out.append(Link("rst_before_reset_received", rst_in, closed))
    return out


RETRANSMIT_WINDOW_S = 0.05
"""How far apart in time a kernel retransmission and a retransmitted segment
at the middlebox may be to be paired (each is the other's nearest)."""


def _retransmits(c: _Conn, side: str) -> list[Link]:
    """Each kernel retransmission paired with the nearest retransmitted
    segment of that side at the middlebox (not every one reaches it: the
    express lane), so that one seen before its retransmission shows."""
    mine = _dir_of(side)
    segments = [s for s in c.segments if s.dir == mine and "retransmit" in s.tags]
    out: list[Link] = []
    used: set[int] = set()
    for event in c.retransmits[side]:
        near = [
            (abs(s.ts - event.ts), i)
            for i, s in enumerate(segments)
            if i not in used and abs(s.ts - event.ts) <= RETRANSMIT_WINDOW_S
        ]
        if not near:
            continue
        _gap, index = min(near)
        used.add(index)
        out.append(Link("retransmit_before_segment", event, segments[index]))
    return out


def _born_at_the_ack(syn_recv: TcpState, syn_ack: Segment) -> bool:
    """An inferred SYN_RECV whose whole poll interval began after the
    SYN-ACK: no request socket was seen, and none can have answered — with
    SYN cookies (``tcp_syncookies``) the kernel keeps none, and the child
    socket is born in SYN_RECV at the handshake ACK.  Its place before the
    SYN-ACK is then not a rule of this connection."""
    return (
        syn_recv.source == "inferred"
        and syn_recv.seen_after is not None
        and syn_recv.seen_after > syn_ack.ts
    )
