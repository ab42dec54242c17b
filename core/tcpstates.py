"""TCP states and socket timers as the kernel numbers them, and the names
events give them.

inet_diag and the tracepoints report states and timers as numbers; every
record carries names instead, the ones ``ss`` and the kernel use.  One table
here keeps the observer, the dump differ and the readers of records agreeing
on them.

This module is pure: tables and a lookup.
"""

from __future__ import annotations

from typing import Final, Literal

__all__ = [
    "CLOSED",
    "SOCK_KINDS",
    "STATE_NAMES",
    "TCP_STATES",
    "TIMERS",
    "SockKind",
    "state_name",
]

# Kernel numbering, include/net/tcp_states.h.  inet_diag and the tracepoints
# report these numbers; the names are the ones `ss` and the kernel use
# (SYN_SENT, not "SYN_SEND").
TCP_STATES: Final[dict[int, str]] = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",  # a socket that is closed but not yet freed
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",  # request sock; inet_diag reports these as SYN_RECV
    13: "BOUND_INACTIVE",
}
CLOSED: Final = "CLOSED"
"""RFC 9293's CLOSED: what the kernel calls TCP_CLOSE, and what a socket is
when the kernel no longer reports it.  Events always say CLOSED."""
STATE_NAMES: Final = frozenset(TCP_STATES.values()) | {CLOSED}


def state_name(number: int) -> str:
    """The event name of kernel state ``number`` (TCP_CLOSE → CLOSED)."""
    name = TCP_STATES.get(number, f"UNKNOWN_{number}")
    return CLOSED if name == "CLOSE" else name


SockKind = Literal["full", "request", "timewait"]
SOCK_KINDS: Final = ("full", "request", "timewait")
"""Which kernel object a state belongs to: a full socket (the tracepoint sees
it), a request socket (SYN_RECV before the handshake's ACK) or a timewait
minisock (TIME_WAIT, and FIN_WAIT2 of an orphan) — the last two only
sock_diag sees."""

TIMERS: Final[dict[int, str]] = {
    # idiag_timer, net/ipv4/inet_diag.c and tcp_diag / ss(8)
    0: "off",
    1: "on",  # retransmit timer (also SYN-ACK retransmit of a request sock)
    2: "keepalive",
    3: "timewait",
    4: "probe",  # zero-window probe
}
