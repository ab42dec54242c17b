"""Merge what the kernel's two sources say about sockets into one account (pure).

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
containers), polling alone works: what a poll sees is a jump between two
states, and :mod:`daemons.inference` says which states in between it
implies, given what the owning program tells the tracker it knows
(:meth:`SocketTracker.note`).

The sources do not arrive in order: a dump takes time, and the trace may
report a socket's change while a dump begun before it is under way.  So the
tracker remembers when each socket last changed (and when the trace saw one
close), and a dump begun before that is older news for it.  What one socket's
news makes is :class:`daemons.tracking.Tracked`'s; the connect()s the trace
saw before they had a port wait in :class:`daemons.portless.PortlessConnects`.
"""

from __future__ import annotations

from collections.abc import Iterable, KeysView, Mapping

from core.events import CLOSED, TcpState, conn_id, endpoint
from daemons.inference import FACTS, Fact, Known
from daemons.portless import PortlessConnects, is_portless
from daemons.tracking import Key, Snapshot, TraceTransition, Tracked, folded

MAX_CLOSED = 65536
"""Sockets the trace saw close that the tracker remembers (see
``SocketTracker._closed_at``)."""


BIRTHS = frozenset(
    {("CLOSED", "SYN_SENT"), ("CLOSED", "LISTEN"), ("LISTEN", "SYN_RECV"), ("CLOSED", "SYN_RECV")}
)
"""The transitions a socket is born with (connect, listen, a listener's
child): the first a tracked socket may be heard of from the tracepoint."""


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
        self._socks: dict[Key, Tracked] = {}
        self._pending_facts: dict[Key, set[Known]] = {}
        self._owned: dict[Key, None] = {}
        """Sockets the program has (it accepted or connected them): what
        happens to one, it would see; the others (a connection still in the
        accept queue) are nobody's, and may be reset unseen."""
        self._ended: dict[Key, None] = {}
        """Sockets that ended and have not been seen again: a fact told
        about one now is about the socket that ended, not a new one with
        the same four-tuple."""
        self._connects = PortlessConnects()
        self._closed_at: dict[Key, float] = {}
        """Sockets the trace saw close, and when: a dump begun before that may
        still list them.  Forgotten once a dump begun after the close has
        been taken in (no later dump can list it), and beyond
        :data:`MAX_CLOSED`, oldest first: a burst of thousands of closes
        while one slow dump is under way must not be forgotten before it."""

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

    def own(self, key: Key) -> None:
        """The program has the socket ``key`` (it accepted or connected it)."""
        if key not in self._socks and key in self._ended:
            return
        _bounded_add(self._owned, key)

    def note(self, key: Key, fact: Fact) -> None:
        """The owning program knows ``fact`` about the socket ``key``."""
        if fact not in FACTS:
            raise ValueError(f"unknown fact {fact!r}")
        tracked = self._socks.get(key)
        if tracked is None and key in self._ended:
            return  # about the socket that ended: not a new one's to inherit
        self.own(key)
        facts = tracked.facts if tracked else self._pending_facts.setdefault(key, set())
        if fact == "snd_fin" and "rcv_fin" in facts and "snd_fin" not in facts:
            facts.add("fin_after_peer")
        facts.add(fact)

    def connecting(self, key: Key) -> list[TcpState]:
        """The owner just called connect() on ``key`` (it knows the port the
        kernel picked): the transitions the trace saw before the socket had
        a port, if they were read already (:meth:`PortlessConnects.connecting`)."""
        return self._apply(self._connects.connecting(key))

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
        if is_portless(event.key):
            return self._apply(self._connects.portless(event))
        out = self._apply(self._connects.ported(event))
        out += self._trace_one(event, successor, looked_up)
        return out

    def awaiting_port(self, key: Key) -> bool:
        """A traced connect() toward ``key``'s peer is still without a port:
        a polled SYN_SENT of ``key`` is probably it (and will be reported
        from the trace once the port is known)."""
        return self._connects.awaiting_port(key)

    def _apply(self, events: Iterable[TraceTransition]) -> list[TcpState]:
        out: list[TcpState] = []
        for event in events:
            out += self._trace_one(event, None, None)
        return out

    def _trace_one(
        self, event: TraceTransition, successor: Snapshot | None, looked_up: float | None
    ) -> list[TcpState]:
        key = event.key
        tracked = self._socks.get(key)
        if tracked is None and (event.old, event.new) not in BIRTHS:
            # A socket neither dumped nor born under the trace: not this
            # namespace's (tracepoints carry none).  A lab's slot, and with
            # it its addresses, is reused once its namespaces are removed,
            # but the kernel closes a removed namespace's sockets later
            # (cleanup_net, a workqueue): those closes must not be reported.
            return []
        self._connects.seen(key)
        if tracked is None:
            tracked = self._new(key, event.old if event.old != "LISTEN" else CLOSED)
            if tracked.role is None:  # a listener
                tracked.state = event.old
        minisock = tracked.minisock(event, successor)
        out = tracked.on_trace(event, minisock, looked_up)
        if event.new == CLOSED and minisock is None:
            self._socks.pop(key, None)
            self._remember_closed(key, event.ts)
            self._end(key)
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
        state = folded(snap.state)
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
            out = tracked.on_poll(state, snap, now, seen_after, vouched=self._vouched(key))
        tracked.last = snap
        return out

    def _gone(self, key: Key, now: float, seen_after: float | None) -> list[TcpState]:
        tracked = self._socks.get(key)
        if tracked is None or (self.traced and tracked.owner == "trace"):
            return []
        del self._socks[key]
        vouched = self._vouched(key)
        self._end(key)
        if tracked.state == CLOSED:
            return []
        return tracked.on_poll(CLOSED, None, now, seen_after, vouched=vouched)

    def _vouched(self, key: Key) -> bool:
        return self.vouched and key in self._owned

    def _end(self, key: Key) -> None:
        self._owned.pop(key, None)
        self._pending_facts.pop(key, None)
        _bounded_add(self._ended, key)

    def _new(self, key: Key, state: str) -> Tracked:
        role = self.role_of(key)
        tracked = Tracked(
            key=key,
            conn=self.conn_of(key, role),
            state=state,
            since=None,
            history=set(),
            role=None if role == "listener" else role,
            facts=self._pending_facts.pop(key, set()),
            last=None,
        )
        self._socks[key] = tracked
        self._ended.pop(key, None)
        return tracked


def _bounded_add(keys: dict[Key, None], key: Key) -> None:
    """``key`` into an ordered set that keeps the newest :data:`MAX_CLOSED`."""
    keys.pop(key, None)
    keys[key] = None
    if len(keys) > MAX_CLOSED:
        del keys[next(iter(keys))]
