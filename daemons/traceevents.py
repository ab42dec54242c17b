"""What one decoded tracepoint event says, in the observer's terms (pure).

The observer's ftrace instance delivers :class:`core.tracebuf.TraceEvent`\\ s
(kernel clock, kernel state numbers).  A state change becomes a
:class:`daemons.tracking.TraceTransition` for the tracker; a retransmission
or a reset is a record of its own, which needs no tracking.  And a full
socket's ``→ CLOSE`` may be a hand-over to a timewait minisock the
tracepoint cannot see: :func:`needs_lookup` says when the observer must look
the four-tuple up in sock_diag to know.  Kept apart from the observer so
these readings can be tested without tracefs.
"""

from __future__ import annotations

from core.events import CLOSED, Record, TcpReset, TcpRetransmit, endpoint, state_name
from core.tracebuf import TraceEvent
from daemons.tracking import Key, TraceTransition

HAND_OVER_FROM = frozenset({"FIN_WAIT1", "FIN_WAIT2", "CLOSING", "TIME_WAIT"})
"""States a full socket can leave for a timewait minisock (``tcp_time_wait``
runs from FIN_WAIT2, when the peer's FIN or the orphan's close arrives, and
from CLOSING; FIN_WAIT1 and TIME_WAIT for good measure).  From any other
state a ``→ CLOSE`` is the connection's end: no exact lookup is needed."""


def may_hand_over(old: str) -> bool:
    """Whether a full socket's ``old → CLOSED`` may be a hand-over to a
    timewait minisock (the observer then looks the four-tuple up)."""
    return old in HAND_OVER_FROM


def event_key(event: TraceEvent) -> Key:
    """The socket's four-tuple, its own side first."""
    return (event.saddr, event.sport, event.daddr, event.dport)


def transition_of(event: TraceEvent, ts: float) -> TraceTransition | None:
    """A ``set_state`` event as the tracker's transition, at wall-clock
    ``ts``; None when the event lacks a state (nothing to report)."""
    if event.oldstate is None or event.newstate is None:
        return None
    old = state_name(event.oldstate)
    new = state_name(event.newstate)
    return TraceTransition(event_key(event), event.skaddr, old, new, ts)


def needs_lookup(transition: TraceTransition) -> bool:
    """Whether a minisock may take over at this transition, so the observer
    must look the four-tuple up before the tracker hears of it (the minisock
    exists before the full socket closes).  A socket without both ports has
    no connection to hand over."""
    key = transition.key
    return (
        transition.new == CLOSED and may_hand_over(transition.old) and bool(key[1]) and bool(key[3])
    )


def event_record(event: TraceEvent, ts: float, conn: str) -> Record | None:
    """The record of a retransmission or reset event, at wall-clock ``ts``
    on connection ``conn``; None for any other kind."""
    local = endpoint(event.saddr, event.sport)
    if event.kind in ("retransmit", "retransmit_synack"):
        return TcpRetransmit(
            ts=ts,
            conn=conn,
            local=local,
            # tcp_retransmit_synack carries no state: its request socket is in SYN_RECV
            state=state_name(event.state) if event.state is not None else "SYN_RECV",
            synack=event.kind == "retransmit_synack",
        )
    if event.kind in ("send_reset", "receive_reset"):
        return TcpReset(
            ts=ts,
            conn=conn,
            local=local,
            direction="sent" if event.kind == "send_reset" else "received",
            state=state_name(event.state) if event.state else None,
            reason=event.reason,
        )
    return None
