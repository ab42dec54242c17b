"""What a jump between two polls implies about the states in between (pure).

Without the tracepoint, the observer polls the kernel (sock_diag) every few
milliseconds.  Between two polls a socket can pass through several states —
on a fast link a whole teardown takes a few microseconds — so what the
poller sees is a *jump* ``old → new``.  This module decides what may be said
about the jump; :class:`daemons.statemachine.SocketTracker` says it:

* If the TCP state machine implies the states in between — every path the
  kernel could have taken from ``old`` to ``new`` passes through them — they
  are reported with ``source="inferred"``.
* What cannot be implied is not invented: the remaining jump is reported as
  it was seen (``FIN_WAIT1 → TIME_WAIT`` can be via FIN_WAIT2 or CLOSING).

"Could have taken" is narrowed by facts the program owning the socket knows
for sure and tells us (:meth:`daemons.statemachine.SocketTracker.note`): it
read end-of-stream, so a FIN arrived (``rcv_fin``); it closed or shut down
writing, so the kernel sent a FIN (``snd_fin``); it got ECONNRESET or
aborted with SO_LINGER 0 (``reset``); it closed its descriptor (``closed``).
While the owner still holds the socket, it would have seen a reset
(ECONNRESET), so without a ``reset`` fact paths that end the connection by
RST are not considered.  Their order counts too: EOF read before the owner's
own FIN went out means the FIN left from CLOSE_WAIT, so LAST_ACK was passed
(``fin_after_peer``).  Once the owner has closed it (an orphan: nobody is
left to see a RST), and for sockets nobody vouches for (``tcplab watch``),
every path is.

The graph is RFC 9293 §3.3.2 (figure 5) as Linux implements it
(net/ipv4/tcp_input.c, tcp.c), with the names ``ss`` uses.  Linux reports a
closed-but-not-freed socket as ``CLOSE``; it is folded into ``CLOSED`` here.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Literal

from core.events import CLOSED

Fact = Literal["rcv_fin", "snd_fin", "reset", "closed"]
FACTS: tuple[Fact, ...] = ("rcv_fin", "snd_fin", "reset", "closed")
Known = Literal["rcv_fin", "snd_fin", "reset", "closed", "fin_after_peer"]
"""What is known about a socket: the owner's facts, and what their order
implies — ``fin_after_peer``: the owner read the peer's FIN (EOF) before it
first sent its own, so when it sent it the socket was in CLOSE_WAIT and went
to LAST_ACK (it cannot have been FIN_WAIT1: the peer's FIN was in)."""

# Edges: (from, to, kind).  kind "rst" marks an ending by RST (or abort), which
# is only a candidate when the owner reports a reset or nobody vouches.
_ACTIVE_ONLY = "active"
_PASSIVE_ONLY = "passive"
EDGES: tuple[tuple[str, str, str], ...] = (
    (CLOSED, "LISTEN", "open"),
    (CLOSED, "SYN_SENT", _ACTIVE_ONLY),
    (CLOSED, "SYN_RECV", _PASSIVE_ONLY),
    ("LISTEN", CLOSED, "close"),
    ("SYN_SENT", "ESTABLISHED", "normal"),
    ("SYN_SENT", "SYN_RECV", "normal"),  # simultaneous open
    ("SYN_SENT", CLOSED, "rst"),  # refused, or gave up (ETIMEDOUT)
    ("SYN_RECV", "ESTABLISHED", "normal"),
    ("SYN_RECV", "FIN_WAIT1", "normal"),
    ("SYN_RECV", CLOSED, "rst"),
    ("ESTABLISHED", "FIN_WAIT1", "normal"),
    ("ESTABLISHED", "CLOSE_WAIT", "normal"),
    ("ESTABLISHED", CLOSED, "rst"),
    ("FIN_WAIT1", "FIN_WAIT2", "normal"),
    ("FIN_WAIT1", "CLOSING", "normal"),
    ("FIN_WAIT1", CLOSED, "rst"),
    ("FIN_WAIT2", "TIME_WAIT", "normal"),
    ("FIN_WAIT2", CLOSED, "timeout"),  # orphan FIN_WAIT2 past tcp_fin_timeout
    ("CLOSING", "TIME_WAIT", "normal"),
    ("CLOSING", CLOSED, "rst"),
    ("CLOSE_WAIT", "LAST_ACK", "normal"),
    ("CLOSE_WAIT", CLOSED, "rst"),
    ("LAST_ACK", CLOSED, "normal"),
    ("TIME_WAIT", CLOSED, "timeout"),
)

# Which states a socket must have passed through for a fact to hold.
_FACT_STATES: dict[Known, frozenset[str]] = {
    "rcv_fin": frozenset({"CLOSE_WAIT", "LAST_ACK", "CLOSING", "TIME_WAIT"}),
    "snd_fin": frozenset({"FIN_WAIT1", "FIN_WAIT2", "CLOSING", "TIME_WAIT", "LAST_ACK"}),
    "fin_after_peer": frozenset({"LAST_ACK"}),
}

MAX_PATH = 6


def _neighbours(state: str, role: str | None, allow_rst: bool) -> Iterable[tuple[str, str]]:
    for src, dst, kind in EDGES:
        if src != state:
            continue
        if kind == _ACTIVE_ONLY and role == "passive":
            continue
        if kind == _PASSIVE_ONLY and role == "active":
            continue
        if kind == "rst" and not allow_rst:
            continue
        yield dst, kind


def candidate_paths(
    old: str,
    new: str,
    *,
    role: str | None = None,
    facts: frozenset[Known] = frozenset(),
    history: frozenset[str] = frozenset(),
    vouched: bool = False,
) -> list[list[str]]:
    """The shortest state paths ``old → … → new`` consistent with what we know
    (see :func:`_search`).  Memoized: a poll that finds thousands of new
    sockets asks the same few questions thousands of times."""
    return [list(p) for p in _search(old, new, role, facts, history, vouched)]


@functools.lru_cache(maxsize=4096)
def _search(
    old: str,
    new: str,
    role: str | None,
    facts: frozenset[Known],
    history: frozenset[str],
    vouched: bool,
) -> tuple[tuple[str, ...], ...]:
    """The shortest state paths ``old → … → new`` consistent with what we know.

    ``history`` is every state the socket is known to have been in before
    ``old``; a fact already explained by the history puts no demand on the path.
    Returns paths including both ends; empty when none fits.
    """
    allow_rst = "reset" in facts or "closed" in facts or not vouched
    needs = [
        states
        for fact, states in _FACT_STATES.items()
        if fact in facts
        and not (states & (history | {old}))
        # a reset may have ended it before our FIN went out
        and not (fact == "fin_after_peer" and "reset" in facts)
    ]
    best: list[list[str]] = []
    frontier: list[tuple[list[str], str | None]] = [([old], None)]
    for _ in range(MAX_PATH):
        nxt: list[tuple[list[str], str | None]] = []
        for path, _last_kind in frontier:
            for dst, kind in _neighbours(path[-1], role, allow_rst):
                if dst in path:
                    continue
                grown = [*path, dst]
                if dst == new:
                    if all(set(grown[1:]) & s for s in needs):
                        best.append(grown)
                else:
                    nxt.append((grown, kind))
        if best:
            return tuple(tuple(p) for p in _prefer_reset(best, facts))
        frontier = nxt
    return ()


def _prefer_reset(paths: list[list[str]], facts: frozenset[Known]) -> list[list[str]]:
    # With a reset on record, a path that ends by RST explains the jump with
    # fewer assumptions than one that ends by a graceful close.
    if "reset" not in facts:
        return paths
    ending = [p for p in paths if _kind(p[-2], p[-1]) == "rst"]
    return ending or paths


def _kind(src: str, dst: str) -> str | None:
    for a, b, kind in EDGES:
        if a == src and b == dst:
            return kind
    return None


@functools.lru_cache(maxsize=4096)
def implied(
    old: str,
    new: str,
    role: str | None,
    facts: frozenset[Known],
    history: frozenset[str],
    vouched: bool,
) -> tuple[str | None, ...]:
    """``implied_states(candidate_paths(...))``, memoized: a poll that finds
    thousands of sockets gone asks the same question thousands of times."""
    return tuple(
        implied_states([list(p) for p in _search(old, new, role, facts, history, vouched)])
    )


def implied_states(paths: list[list[str]]) -> list[str | None]:
    """For equal-length paths, the intermediate state at each position if all
    paths agree on it, else None."""
    if not paths:
        return []
    length = len(paths[0])
    if any(len(p) != length for p in paths):
        return []
    out: list[str | None] = []
    for i in range(1, length - 1):
        states = {p[i] for p in paths}
        out.append(states.pop() if len(states) == 1 else None)
    return out
