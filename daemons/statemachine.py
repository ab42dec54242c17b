"""Turn a series of socket snapshots into state-change events (pure).

The observer polls the kernel (sock_diag) every few milliseconds.  Between two
polls a socket can pass through several states — on a fast link a whole
teardown takes a few microseconds — so what the poller sees is a *jump*
``old → new``.  This module decides what to say about the jump:

* If the TCP state machine implies the states in between — every path the
  kernel could have taken from ``old`` to ``new`` passes through them — they
  are reported with ``source="inferred"``.
* What cannot be implied is not invented: the remaining jump is reported as
  it was seen (``FIN_WAIT1 → TIME_WAIT`` can be via FIN_WAIT2 or CLOSING).

"Could have taken" is narrowed by facts the program owning the socket knows
for sure and tells us (:meth:`SocketTracker.note`): it read end-of-stream, so
a FIN arrived (``rcv_fin``); it closed or shut down writing, so the kernel
sent a FIN (``snd_fin``); it got ECONNRESET or aborted with SO_LINGER 0
(``reset``); it closed its descriptor (``closed``).  While the owner still
holds the socket, it would have seen a reset (ECONNRESET), so without a
``reset`` fact paths that end the connection by RST are not considered.
Once the owner has closed it (an orphan: nobody is left to see a RST), and
for sockets nobody vouches for (``tcplab watch``), every path is.

The graph is RFC 9293 §3.3.2 (figure 5) as Linux implements it
(net/ipv4/tcp_input.c, tcp.c), with the names ``ss`` uses.  Linux reports a
closed-but-not-freed socket as ``CLOSE``; it is folded into ``CLOSED`` here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, Mapping
from typing import Literal

from tcplab.events import CLOSED, TcpState, conn_id, endpoint

Fact = Literal["rcv_fin", "snd_fin", "reset", "closed"]
FACTS: tuple[Fact, ...] = ("rcv_fin", "snd_fin", "reset", "closed")
Key = tuple[str, int, str, int]
"""(local address, local port, remote address, remote port)."""

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
_FACT_STATES: dict[Fact, frozenset[str]] = {
    "rcv_fin": frozenset({"CLOSE_WAIT", "LAST_ACK", "CLOSING", "TIME_WAIT"}),
    "snd_fin": frozenset({"FIN_WAIT1", "FIN_WAIT2", "CLOSING", "TIME_WAIT", "LAST_ACK"}),
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
    facts: frozenset[Fact] = frozenset(),
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
    facts: frozenset[Fact],
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
        if fact in facts and not (states & (history | {old}))
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


def _prefer_reset(paths: list[list[str]], facts: frozenset[Fact]) -> list[list[str]]:
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


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """What one poll said about one socket (a subset of sock_diag's reply)."""

    key: Key
    state: str
    timer: str = "off"
    expires_ms: int | None = None
    retrans: int = 0


@dataclasses.dataclass(slots=True)
class _Tracked:
    state: str
    since: float | None  # when we first saw it in this state (None: inferred)
    history: set[str]
    role: str | None
    facts: set[Fact]
    last: Snapshot | None


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    """One state-change event and the time it is stamped with."""

    ts: float
    record: TcpState


class SocketTracker:
    """Diffs successive snapshots of a set of sockets into :class:`Change` s.

    ``passive_ports``: local ports we listen on — a connection on one of them
    was opened passively (its first state is SYN_RECV, not SYN_SENT).
    ``vouched``: the sockets belong to the program that feeds us facts.
    """

    def __init__(self, *, passive_ports: Iterable[int] = (), vouched: bool = False) -> None:
        self.passive_ports = frozenset(passive_ports)
        self.vouched = vouched
        self._socks: dict[Key, _Tracked] = {}
        self._pending_facts: dict[Key, set[Fact]] = {}

    def role_of(self, key: Key) -> str:
        if key[3] == 0:
            return "listener"
        return "passive" if key[1] in self.passive_ports else "active"

    @staticmethod
    def conn_of(key: Key, role: str) -> str:
        local, lport, remote, rport = key
        if role == "passive":
            return conn_id(remote, rport, local, lport)
        if role == "listener":
            return f"{local}:{lport}" if ":" not in local else f"[{local}]:{lport}"
        return conn_id(local, lport, remote, rport)

    def note(self, key: Key, fact: Fact) -> None:
        """The owning program knows ``fact`` about the socket ``key``."""
        if fact not in FACTS:
            raise ValueError(f"unknown fact {fact!r}")
        tracked = self._socks.get(key)
        if tracked is not None:
            tracked.facts.add(fact)
        else:
            self._pending_facts.setdefault(key, set()).add(fact)

    @property
    def live(self) -> dict[Key, str]:
        """Sockets currently known, and their state."""
        return {k: t.state for k, t in self._socks.items()}

    def snapshot_of(self, key: Key) -> Snapshot | None:
        tracked = self._socks.get(key)
        return tracked.last if tracked else None

    def update(self, snapshot: Mapping[Key, Snapshot], now: float) -> list[Change]:
        """One poll's worth of sockets (already filtered to the ones we track)."""
        changes: list[Change] = []
        for key, snap in snapshot.items():
            state = CLOSED if snap.state == "CLOSE" else snap.state
            tracked = self._socks.get(key)
            if tracked is None:
                if state == CLOSED:
                    continue
                role = self.role_of(key)
                tracked = _Tracked(
                    state=CLOSED,
                    since=None,
                    history=set(),
                    role=None if role == "listener" else role,
                    facts=self._pending_facts.pop(key, set()),
                    last=None,
                )
                self._socks[key] = tracked
            if state != tracked.state:
                changes.extend(self._transition(key, tracked, state, snap, now))
            tracked.last = snap
        for key in [k for k in self._socks if k not in snapshot]:
            tracked = self._socks.pop(key)
            if tracked.state != CLOSED:
                changes.extend(self._transition(key, tracked, CLOSED, None, now))
        return changes

    def _transition(
        self, key: Key, tracked: _Tracked, new: str, snap: Snapshot | None, now: float
    ) -> list[Change]:
        old = tracked.state
        paths = candidate_paths(
            old,
            new,
            role=tracked.role,
            facts=frozenset(tracked.facts),
            history=frozenset(tracked.history),
            vouched=self.vouched,
        )
        middle = implied_states(paths)
        conn = self.conn_of(key, tracked.role or "listener")
        local = endpoint(key[0], key[1])
        out: list[Change] = []
        in_old = None if tracked.since is None else round((now - tracked.since) * 1000, 3)
        prev = old
        for state in middle:
            if state is None:
                continue  # not implied: the jump from prev is reported as seen
            out.append(
                Change(
                    now,
                    TcpState(
                        conn=conn,
                        old=prev,
                        new=state,
                        source="inferred",
                        in_old_ms=in_old if prev == old else None,
                        local=local,
                    ),
                )
            )
            tracked.history.add(prev)
            prev = state
        timer, expires, retrans = "off", None, 0
        if snap is not None:
            timer, expires, retrans = snap.timer, snap.expires_ms, snap.retrans
        out.append(
            Change(
                now,
                TcpState(
                    conn=conn,
                    old=prev,
                    new=new,
                    source="poll",
                    in_old_ms=in_old if prev == old else None,
                    timer=timer,
                    expires_ms=expires,
                    retrans=retrans,
                    local=local,
                ),
            )
        )
        tracked.history.add(prev)
        tracked.state = new
        tracked.since = now
        return out
