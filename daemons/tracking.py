"""One socket as the tracker knows it, and how news of it becomes records (pure).

The two sources speak of a socket in their own terms: sock_diag as a
:class:`Snapshot` (the state it is in now, with its timer), the tracepoint as
a :class:`TraceTransition` (a change, with the kernel's time).  A
:class:`Tracked` keeps what is known of one socket — its state and since
when, the states it has passed, the owner's facts, which source speaks for
it — and turns each piece of news into ``tcp_state`` records, one per
transition, each with the time of its fact.  Which source is heard for which
socket, and when, is :class:`daemons.statemachine.SocketTracker`'s to decide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, Literal

from core.events import CLOSED, SockKind, StateSource, TcpState, endpoint
from daemons.inference import Known, implied

Key = tuple[str, int, str, int]
"""(local address, local port, remote address, remote port)."""


def folded(state: str) -> str:
    """A state as the tracker names it: Linux reports a closed-but-not-freed
    socket as ``CLOSE``, which is ``CLOSED`` here."""
    return CLOSED if state == "CLOSE" else state


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
class Tracked:
    """What is known of one socket, and the records each piece of news makes.

    ``role`` is ``active`` or ``passive`` (None: a listener); ``conn`` the
    connection's name in the records."""

    key: Key
    conn: str
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

    @property
    def local(self) -> str:
        return endpoint(self.key[0], self.key[1])

    def minisock(self, event: TraceTransition, successor: Snapshot | None) -> Snapshot | None:
        """At a traced ``→ CLOSED``, the minisock that takes the connection
        over: ``successor`` (what a lookup found then) when it is one.  A
        listener hands nothing over."""
        if event.new != CLOSED or successor is None or self.role is None:
            return None
        return successor if successor.kind != "full" else None

    def on_trace(
        self, event: TraceTransition, minisock: Snapshot | None, looked_up: float | None
    ) -> list[TcpState]:
        """A traced transition of this full socket; ``minisock`` the one
        that takes over at its ``→ CLOSED`` (:meth:`minisock`), found by a
        lookup at ``looked_up``."""
        ts = event.ts
        # a child socket born from the listener (LISTEN → SYN_RECV) when its
        # request socket was already seen in SYN_RECV changes nothing for the
        # connection: the time in SYN_RECV runs on from the request socket
        same = self.state == event.new
        in_old = None
        if not same and self.since is not None:
            in_old = round((ts - self.since) * 1000, 3)
        out = [
            TcpState(
                ts=ts,
                conn=self.conn,
                old=event.old,
                new=event.new,
                source="trace",
                in_old_ms=in_old,
                local=self.local,
                sock="full",
                handed_to=minisock.kind if minisock is not None else None,
                handed_state=folded(minisock.state) if minisock is not None else None,
                handed_seen=(
                    looked_up
                    if minisock is not None and folded(minisock.state) != event.old
                    else None
                ),
            )
        ]
        self.owner = "trace"
        self.sock = "full"
        self.changed_at = ts
        if minisock is None:
            if not same:
                self.history.add(self.state)
                self.state = event.new
                # a child born in SYN_RECV whose request socket was never
                # seen: it has been in SYN_RECV since the SYN, time unknown
                child = event.old == "LISTEN" and self.role is not None
                self.since = None if child else ts
            return out
        if looked_up is not None:
            # the minisock's state is what the lookup saw, then: a dump begun
            # before it may show an older one (FIN_WAIT2 before the peer's FIN)
            self.changed_at = max(ts, looked_up)
        return out + self._hand_over(event, minisock, in_old, looked_up)

    def _hand_over(
        self,
        event: TraceTransition,
        minisock: Snapshot,
        in_old: float | None,
        looked_up: float | None,
    ) -> list[TcpState]:
        # the connection lives on in a minisock: from now on sock_diag speaks for it
        self.owner = "poll"
        self.sock = minisock.kind
        self.last = minisock
        state = folded(minisock.state)
        if state == event.old:
            return []
        record = TcpState(
            ts=looked_up if looked_up is not None else event.ts,
            seen_after=event.ts,
            conn=self.conn,
            old=event.old,
            new=state,
            source="poll",
            in_old_ms=in_old,
            timer=minisock.timer,
            expires_ms=minisock.expires_ms,
            retrans=minisock.retrans,
            local=self.local,
            sock=minisock.kind,
        )
        self.history.add(event.old)
        # ts of the handover: that is when the minisock began
        self.state = state
        self.since = event.ts
        return [record]

    def on_poll(
        self,
        new: str,
        snap: Snapshot | None,
        now: float,
        seen_after: float | None,
        *,
        vouched: bool,
    ) -> list[TcpState]:
        """sock_diag found this socket in state ``new`` (``snap``; None:
        gone) at ``now``, having seen it last in the dump begun at
        ``seen_after``: the states the jump implies, then the jump."""
        old = self.state
        middle = implied(
            old, new, self.role, frozenset(self.facts), frozenset(self.history), vouched
        )
        out: list[TcpState] = []
        in_old = None if self.since is None else round((now - self.since) * 1000, 3)

        def step(prev: str, state: str, source: StateSource, **extra: Any) -> None:
            out.append(
                TcpState(
                    ts=now,
                    seen_after=seen_after,
                    conn=self.conn,
                    old=prev,
                    new=state,
                    source=source,
                    in_old_ms=in_old if prev == old else None,
                    local=self.local,
                    sock=self.sock,
                    **extra,
                )
            )
            self.history.add(prev)

        prev = old
        for state in middle:
            if state is None:
                continue  # not implied: the jump from prev is reported as seen
            step(prev, state, "inferred")
            prev = state
        if snap is None:
            step(prev, new, "poll", timer="off", expires_ms=None, retrans=0)
        else:
            step(
                prev,
                new,
                "poll",
                timer=snap.timer,
                expires_ms=snap.expires_ms,
                retrans=snap.retrans,
            )
        self.state = new
        self.since = now
        return out
