"""Turn what the kernel reports about sockets into state-change records (pure).

Two sources feed :class:`SocketTracker`:

* **the tracepoint** ``sock:inet_sock_set_state`` (:meth:`SocketTracker.trace`):
  every transition of a *full* socket, with the kernel's own time.  It does
  not see request sockets (a SYN_RECV before the handshake's ACK) nor
  timewait minisocks (TIME_WAIT, and the FIN_WAIT2 of an orphan): when a full
  socket hands its connection to a minisock the tracepoint says ``→ CLOSE``
  while ``ss`` still lists the connection.  The record of that ``→ CLOSED``
  carries ``handed_to="timewait"``, and what the minisock is in comes from
  sock_diag, as a ``poll`` record.
* **sock_diag** (:meth:`SocketTracker.update` for a dump,
  :meth:`SocketTracker.lookup` for one socket): everything alive, with
  timers.  With the tracepoint on, a poll speaks only for what the tracepoint
  cannot see (request sockets, minisocks, sockets it never heard of); the
  trace owns every full socket it reported, and a poll only confirms it.
  One record per transition.

Without the tracepoint (no tracefs, no CAP_SYS_ADMIN: the compose
containers), polling alone works as before, described below.

Polling: the observer polls the kernel (sock_diag) every few milliseconds.  Between two
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
Their order counts too: EOF read before the owner's own FIN went out means
the FIN left from CLOSE_WAIT, so LAST_ACK was passed (``fin_after_peer``).
Once the owner has closed it (an orphan: nobody is left to see a RST), and
for sockets nobody vouches for (``tcplab watch``), every path is.

The graph is RFC 9293 §3.3.2 (figure 5) as Linux implements it
(net/ipv4/tcp_input.c, tcp.c), with the names ``ss`` uses.  Linux reports a
closed-but-not-freed socket as ``CLOSE``; it is folded into ``CLOSED`` here.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable, KeysView, Mapping
from typing import Literal

from core.events import CLOSED, SockKind, TcpState, conn_id, endpoint

Fact = Literal["rcv_fin", "snd_fin", "reset", "closed"]
FACTS: tuple[Fact, ...] = ("rcv_fin", "snd_fin", "reset", "closed")
Known = Literal["rcv_fin", "snd_fin", "reset", "closed", "fin_after_peer"]
"""What is known about a socket: the owner's facts, and what their order
implies — ``fin_after_peer``: the owner read the peer's FIN (EOF) before it
first sent its own, so when it sent it the socket was in CLOSE_WAIT and went
to LAST_ACK (it cannot have been FIN_WAIT1: the peer's FIN was in)."""
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
_FACT_STATES: dict[Known, frozenset[str]] = {
    "rcv_fin": frozenset({"CLOSE_WAIT", "LAST_ACK", "CLOSING", "TIME_WAIT"}),
    "snd_fin": frozenset({"FIN_WAIT1", "FIN_WAIT2", "CLOSING", "TIME_WAIT", "LAST_ACK"}),
    "fin_after_peer": frozenset({"LAST_ACK"}),
}

MAX_PATH = 6

HAND_OVER_FROM = frozenset({"FIN_WAIT1", "FIN_WAIT2", "CLOSING", "TIME_WAIT"})
"""States a full socket can leave for a timewait minisock (``tcp_time_wait``
runs from FIN_WAIT2, when the peer's FIN or the orphan's close arrives, and
from CLOSING; FIN_WAIT1 and TIME_WAIT for good measure).  From any other
state a ``→ CLOSE`` is the connection's end: no exact lookup is needed."""


def may_hand_over(old: str) -> bool:
    """Whether a full socket's ``old → CLOSED`` may be a hand-over to a
    timewait minisock (the observer then looks the four-tuple up)."""
    return old in HAND_OVER_FROM


POLL_DUTY = 10.0
"""A poll that took ``c`` seconds waits at least ``POLL_DUTY × c`` before the
next one: at most about a tenth of the time goes to polling."""
MAX_POLL_INTERVAL = 0.25
"""However dear polls get, one every quarter second (TIME_WAIT, request
sockets that linger, timers stay visible)."""


def poll_interval(base: float, cost: float) -> float:
    """The pause before the next sock_diag dump, given the configured
    interval ``base`` and what the last poll cost (wall time, seconds).
    Cheap polls (a lab's handful of sockets: ~0.1 ms) keep ``base``; a
    dump of thousands of sockets backs off, never beyond
    :data:`MAX_POLL_INTERVAL` (nor below ``base``)."""
    return max(base, min(MAX_POLL_INTERVAL, cost * POLL_DUTY))


MAX_CONNECTING = 4096
MAX_CLOSED = 65536
"""Connects waiting for their portless trace event; more means the trace is
not keeping up, and the oldest are forgotten (a poll reports them)."""


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
def _implied(
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


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """What sock_diag said about one socket (a subset of its reply)."""

    key: Key
    state: str
    timer: str = "off"
    expires_ms: int | None = None
    retrans: int = 0

    @property
    def kind(self) -> SockKind:
        """Which kernel object this is, as far as sock_diag shows: TIME_WAIT
        and a timewait timer mean a minisock; SYN_RECV before the tracepoint
        saw a full socket is a request socket (the tracker decides that)."""
        if self.state == "TIME_WAIT" or self.timer == "timewait":
            return "timewait"
        return "full"


# Which state a dump keeps when it lists one connection twice (during the
# TIME_WAIT hand-over a dump can list the full socket and its successor).
_LATER = {
    name: i
    for i, name in enumerate(
        [
            "LISTEN",
            "SYN_SENT",
            "SYN_RECV",
            "ESTABLISHED",
            "CLOSE_WAIT",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "CLOSING",
            "LAST_ACK",
            "TIME_WAIT",
            "CLOSE",
        ]
    )
}


def merge_dump(snapshots: Iterable[Snapshot]) -> dict[Key, Snapshot]:
    """One dump's sockets by key; of two entries for one key, the later state."""
    out: dict[Key, Snapshot] = {}
    for snap in snapshots:
        prev = out.get(snap.key)
        if prev is None or _LATER.get(snap.state, -1) > _LATER.get(prev.state, -1):
            out[snap.key] = snap
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class TraceTransition:
    """One ``sock:inet_sock_set_state`` event, already in wall-clock time.

    ``key`` is (saddr, sport, daddr, dport) as the tracepoint gives them: the
    socket's own side first.  A socket entering SYN_SENT has no port yet
    (``tcp_v4_connect`` sets the state before it picks one), so ``key[1]``
    is 0 there; ``skaddr`` ties it to the socket's next transition."""

    key: Key
    skaddr: int
    old: str
    new: str
    ts: float


@dataclasses.dataclass(slots=True)
class _Tracked:
    state: str
    since: float | None  # when it entered this state (None: not known)
    history: set[str]
    role: str | None
    facts: set[Known]
    last: Snapshot | None
    owner: Literal["trace", "poll"] = "poll"
    changed_at: float = float("-inf")
    """When the trace or an exact lookup last spoke of it: a dump begun
    before that is older news for this socket than what the tracker knows."""
    sock: SockKind | None = None
    """None: sock_diag alone cannot tell (a polled SYN_RECV without the trace)."""


def _same_peer(portless: Key, key: Key) -> bool:
    """``key`` may be the socket the portless ``portless`` became."""
    return portless[0] == key[0] and portless[2] == key[2] and portless[3] == key[3]


@dataclasses.dataclass(slots=True)
class _Pending:
    """Transitions of a socket that has no port yet (connect() in progress)."""

    key: Key
    items: list[TraceTransition]


class SocketTracker:
    """Turns trace transitions and sock_diag snapshots into :class:`TcpState`
    records, one per transition, each with the time of its fact.

    ``passive_ports``: local ports we listen on — a connection on one of them
    was opened passively (its first state is SYN_RECV, not SYN_SENT).
    ``vouched``: the sockets belong to the program that feeds us facts.
    ``traced``: the tracepoint source is on (see the module docstring).
    """

    def __init__(
        self,
        *,
        passive_ports: Iterable[int] = (),
        vouched: bool = False,
        traced: bool = False,
    ) -> None:
        self.passive_ports = frozenset(passive_ports)
        self.vouched = vouched
        self.traced = traced
        self._socks: dict[Key, _Tracked] = {}
        self._pending_facts: dict[Key, set[Known]] = {}
        self._portless: dict[int, _Pending] = {}
        self._closed_at: dict[Key, float] = {}
        """Sockets the trace saw close, and when: a dump begun before that may
        still list them.  Forgotten once a dump begun after the close has
        been taken in (no later dump can list it), and beyond
        :data:`MAX_CLOSED`, oldest first: a burst of thousands of closes
        while one slow dump is under way must not be forgotten before it."""
        self._linked: dict[int, Key] = {}
        """Portless sockets already tied to their four-tuple, by address."""
        self._connecting: list[Key] = []
        """Sockets the owner said it is connecting (port known, SYN_SENT's
        trace event maybe not read yet), oldest first."""

    # --- naming ------------------------------------------------------------

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
            return endpoint(local, lport)
        return conn_id(local, lport, remote, rport)

    def conn(self, key: Key) -> str:
        return self.conn_of(key, self.role_of(key))

    # --- what the owner knows ------------------------------------------------

    def note(self, key: Key, fact: Fact) -> None:
        """The owning program knows ``fact`` about the socket ``key``."""
        if fact not in FACTS:
            raise ValueError(f"unknown fact {fact!r}")
        tracked = self._socks.get(key)
        facts = tracked.facts if tracked else self._pending_facts.setdefault(key, set())
        if fact == "snd_fin" and "rcv_fin" in facts and "snd_fin" not in facts:
            facts.add("fin_after_peer")
        facts.add(fact)

    def connecting(self, key: Key) -> list[TcpState]:
        """The owner just called connect() on ``key`` (it knows the port the
        kernel picked).  The tracepoint saw that socket enter SYN_SENT before
        it had a port; one thread's connect() calls reach the tracepoint in
        the order they were made, so the oldest portless SYN_SENT toward the
        same peer is this socket's."""
        for skaddr, pending in self._portless.items():
            if _same_peer(pending.key, key):
                del self._portless[skaddr]
                out: list[TcpState] = []
                for item in pending.items:
                    out += self._trace_one(dataclasses.replace(item, key=key), None, None)
                self._linked[skaddr] = key
                return out
        self._connecting.append(key)
        del self._connecting[:-MAX_CONNECTING]
        return []

    @property
    def live(self) -> dict[Key, str]:
        """Sockets currently known, and their state."""
        return {k: t.state for k, t in self._socks.items()}

    def state_of(self, key: Key) -> str | None:
        """The state ``key`` is known to be in (None: not tracked)."""
        tracked = self._socks.get(key)
        return tracked.state if tracked is not None else None

    def snapshot_of(self, key: Key) -> Snapshot | None:
        tracked = self._socks.get(key)
        return tracked.last if tracked else None

    def owner_of(self, key: Key) -> str | None:
        tracked = self._socks.get(key)
        return tracked.owner if tracked else None

    # --- the tracepoint --------------------------------------------------------

    def trace(
        self,
        event: TraceTransition,
        successor: Snapshot | None = None,
        looked_up: float | None = None,
    ) -> list[TcpState]:
        """One tracepoint transition.

        For a connection's ``→ CLOSED`` the caller looks the four-tuple up in
        sock_diag right away (the minisock exists before the full socket
        closes): ``successor`` is what it found (None: nothing), at
        ``looked_up``."""
        key = event.key
        if key[1] == 0 and key[3] != 0:
            linked = self._linked.get(event.skaddr)
            if linked is not None and event.new != CLOSED:
                return self._trace_one(dataclasses.replace(event, key=linked), None, None)
            waiting = next((k for k in self._connecting if _same_peer(key, k)), None)
            if waiting is not None and event.skaddr not in self._portless:
                self._connecting.remove(waiting)
                self._linked[event.skaddr] = waiting
                return self._trace_one(dataclasses.replace(event, key=waiting), None, None)
            pending = self._portless.get(event.skaddr)
            if event.new == CLOSED and pending is not None:
                # connect() failed before it got a port (EADDRNOTAVAIL)
                del self._portless[event.skaddr]
                out: list[TcpState] = []
                for item in [*pending.items, event]:
                    out += self._trace_one(item, None, None)
                return out
            if pending is None:
                self._portless[event.skaddr] = _Pending(key, [event])
            else:
                pending.items.append(event)
            return []
        out = []
        self._linked.pop(event.skaddr, None)
        pending = self._portless.pop(event.skaddr, None)
        if pending is not None:
            for item in pending.items:
                out += self._trace_one(dataclasses.replace(item, key=key), None, None)
        out += self._trace_one(event, successor, looked_up)
        return out

    def awaiting_port(self, key: Key) -> bool:
        """A traced connect() toward ``key``'s peer is still without a port:
        a polled SYN_SENT of ``key`` is probably it (and will be reported
        from the trace once the port is known)."""
        return any(_same_peer(p.key, key) for p in self._portless.values()) or key in (
            self._connecting
        )

    def _trace_one(
        self, event: TraceTransition, successor: Snapshot | None, looked_up: float | None
    ) -> list[TcpState]:
        key = event.key
        if key in self._connecting:  # its portless SYN_SENT was never read
            self._connecting.remove(key)
        role = self.role_of(key)
        tracked = self._socks.get(key)
        if tracked is None:
            tracked = self._new(key, event.old if event.old != "LISTEN" else CLOSED)
            if role == "listener":
                tracked.state = event.old
        conn = self.conn_of(key, role)
        local = endpoint(key[0], key[1])
        ts = event.ts
        handed: SockKind | None = None
        handed_state: str | None = None
        if event.new == CLOSED and successor is not None and role != "listener":
            handed = successor.kind if successor.kind != "full" else None
            if handed is not None:
                handed_state = CLOSED if successor.state == "CLOSE" else successor.state
        # a child socket born from the listener (LISTEN → SYN_RECV) when its
        # request socket was already seen in SYN_RECV changes nothing for the
        # connection: the time in SYN_RECV runs on from the request socket
        same = tracked.state == event.new
        in_old = None
        if not same and tracked.since is not None:
            in_old = round((ts - tracked.since) * 1000, 3)
        out = [
            TcpState(
                ts=ts,
                conn=conn,
                old=event.old,
                new=event.new,
                source="trace",
                in_old_ms=in_old,
                local=local,
                sock="full",
                handed_to=handed,
                handed_state=handed_state,
            )
        ]
        tracked.owner = "trace"
        tracked.sock = "full"
        tracked.changed_at = ts
        if handed is None or successor is None:
            if not same:
                tracked.history.add(tracked.state)
                tracked.state = event.new
                # a child born in SYN_RECV whose request socket was never
                # seen: it has been in SYN_RECV since the SYN, time unknown
                child = event.old == "LISTEN" and role != "listener"
                tracked.since = None if child else ts
            if event.new == CLOSED:
                self._socks.pop(key, None)
                self._remember_closed(key, ts)
            return out
        # the connection lives on in a minisock: from now on sock_diag speaks for it
        tracked.owner = "poll"
        tracked.sock = handed
        tracked.last = successor
        state = CLOSED if successor.state == "CLOSE" else successor.state
        if state != event.old:
            out.append(
                TcpState(
                    ts=looked_up if looked_up is not None else ts,
                    seen_after=ts,
                    conn=conn,
                    old=event.old,
                    new=state,
                    source="poll",
                    in_old_ms=in_old,
                    timer=successor.timer,
                    expires_ms=successor.expires_ms,
                    retrans=successor.retrans,
                    local=local,
                    sock=handed,
                )
            )
            tracked.history.add(event.old)
        # ts of the handover: that is when the minisock began
        if state != event.old:
            tracked.state = state
            tracked.since = ts
        return out

    # --- sock_diag ---------------------------------------------------------------

    def update(
        self,
        snapshot: Mapping[Key, Snapshot],
        now: float,
        seen_after: float | None = None,
        *,
        started: float | None = None,
    ) -> list[TcpState]:
        """One dump's worth of sockets (already filtered to the ones we
        track), finished at ``now`` and begun at ``started``; the dump before
        it began at ``seen_after``.  A socket the trace changed after this
        dump began is left alone: the dump may show its state before."""
        missing = [k for k in self._socks if k not in snapshot]
        return self.update_changed(snapshot, missing, now, seen_after, started=started)

    def update_changed(
        self,
        changed: Mapping[Key, Snapshot],
        missing: Iterable[Key],
        now: float,
        seen_after: float | None = None,
        *,
        started: float | None = None,
    ) -> list[TcpState]:
        """One dump, by its differences: ``changed`` the sockets whose entry
        is not what the dump before showed, ``missing`` the known sockets
        this dump does not list.  A socket whose entry did not change has
        nothing new to say (what :meth:`update` would find for it).  So a
        dump of thousands of sockets costs what changed, not what exists."""
        begun = started if started is not None else now
        out: list[TcpState] = []
        for key, snap in changed.items():
            if self._newer(key, begun):
                continue
            out += self._seen(key, snap, now, seen_after)
        for key in missing:
            if self._newer(key, begun):
                continue
            out += self._gone(key, now, seen_after)
        self._forget_closed_before(begun)
        return out

    def known(self) -> KeysView[Key]:
        """The sockets tracked now (a live view)."""
        return self._socks.keys()

    def _newer(self, key: Key, begun: float) -> bool:
        tracked = self._socks.get(key)
        if tracked is not None:
            return tracked.changed_at > begun
        return self._closed_at.get(key, float("-inf")) > begun

    def lookup(
        self,
        key: Key,
        snap: Snapshot | None,
        now: float,
        seen_after: float | None = None,
        *,
        started: float | None = None,
    ) -> list[TcpState]:
        """What an exact sock_diag lookup of one socket, begun at ``started``
        and answered at ``now``, found (None: nothing).  A dump begun before
        it is older news for this socket."""
        begun = started if started is not None else now
        if snap is None:
            out = self._gone(key, now, seen_after)
            if out:
                self._remember_closed(key, begun)
            return out
        out = self._seen(key, snap, now, seen_after)
        tracked = self._socks.get(key)
        if tracked is not None and tracked.owner == "poll":
            tracked.changed_at = max(tracked.changed_at, begun)
        return out

    def _remember_closed(self, key: Key, ts: float) -> None:
        self._closed_at.pop(key, None)  # kept in order of closing
        self._closed_at[key] = ts
        if len(self._closed_at) > MAX_CLOSED:
            del self._closed_at[next(iter(self._closed_at))]

    def _forget_closed_before(self, begun: float) -> None:
        """Closes before a dump that began at ``begun`` and was taken in:
        dumps are made one after the other, so no later one can list them."""
        closed = self._closed_at
        while closed:
            first = next(iter(closed))
            if closed[first] >= begun:
                break
            del closed[first]

    def _seen(
        self, key: Key, snap: Snapshot, now: float, seen_after: float | None
    ) -> list[TcpState]:
        state = CLOSED if snap.state == "CLOSE" else snap.state
        tracked = self._socks.get(key)
        if tracked is None:
            if state == CLOSED:
                return []
            if self.traced and state == "SYN_SENT" and self.awaiting_port(key):
                return []  # the trace will report it, with its own time
            tracked = self._new(key, CLOSED)
            if snap.kind == "timewait":
                tracked.sock = "timewait"
            elif self.traced:
                # the trace never saw a full socket for it: a SYN_RECV is a
                # request socket; anything else predates the trace
                tracked.sock = "request" if state == "SYN_RECV" else "full"
        if self.traced and tracked.owner == "trace":
            tracked.last = snap  # the trace speaks for it; keep the timers
            return []
        if snap.kind == "timewait":
            tracked.sock = "timewait"
        out: list[TcpState] = []
        if state != tracked.state:
            out = self._transition(key, tracked, state, snap, now, seen_after)
        tracked.last = snap
        return out

    def _gone(self, key: Key, now: float, seen_after: float | None) -> list[TcpState]:
        tracked = self._socks.get(key)
        if tracked is None or (self.traced and tracked.owner == "trace"):
            return []
        del self._socks[key]
        if tracked.state == CLOSED:
            return []
        return self._transition(key, tracked, CLOSED, None, now, seen_after)

    def _new(self, key: Key, state: str) -> _Tracked:
        role = self.role_of(key)
        tracked = _Tracked(
            state=state,
            since=None,
            history=set(),
            role=None if role == "listener" else role,
            facts=self._pending_facts.pop(key, set()),
            last=None,
        )
        self._socks[key] = tracked
        return tracked

    def _transition(
        self,
        key: Key,
        tracked: _Tracked,
        new: str,
        snap: Snapshot | None,
        now: float,
        seen_after: float | None,
    ) -> list[TcpState]:
        old = tracked.state
        middle = _implied(
            old,
            new,
            tracked.role,
            frozenset(tracked.facts),
            frozenset(tracked.history),
            self.vouched,
        )
        conn = self.conn_of(key, tracked.role or "listener")
        local = endpoint(key[0], key[1])
        out: list[TcpState] = []
        in_old = None if tracked.since is None else round((now - tracked.since) * 1000, 3)
        prev = old
        for state in middle:
            if state is None:
                continue  # not implied: the jump from prev is reported as seen
            out.append(
                TcpState(
                    ts=now,
                    seen_after=seen_after,
                    conn=conn,
                    old=prev,
                    new=state,
                    source="inferred",
                    in_old_ms=in_old if prev == old else None,
                    local=local,
                    sock=tracked.sock,
                )
            )
            tracked.history.add(prev)
            prev = state
        timer, expires, retrans = "off", None, 0
        if snap is not None:
            timer, expires, retrans = snap.timer, snap.expires_ms, snap.retrans
        out.append(
            TcpState(
                ts=now,
                seen_after=seen_after,
                conn=conn,
                old=prev,
                new=new,
                source="poll",
                in_old_ms=in_old if prev == old else None,
                timer=timer,
                expires_ms=expires,
                retrans=retrans,
                local=local,
                sock=tracked.sock,
            )
        )
        tracked.history.add(prev)
        tracked.state = new
        tracked.since = now
        return out
