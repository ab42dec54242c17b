"""The socket-state observer: a trio task that polls sock_diag and logs
``tcp_state`` events for the sockets it was asked to watch.

Both daemons run one in their nursery, for their own sockets (selected by
port); ``tcplab watch`` runs one for any namespace.  The polling and the
diffing are separate: :mod:`daemons.sockdiag` decodes the kernel's replies,
:mod:`daemons.statemachine` turns snapshots into events (and says which
states were inferred); this module only sleeps, dumps and logs.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import trio

from daemons import sockdiag
from daemons.statemachine import Change, Fact, Key, Snapshot, SocketTracker
from tcplab import events
from tcplab.events import TCP_STATES, TIMERS

DEFAULT_INTERVAL = 0.005
"""5 ms: short enough to see a SYN_RECV or FIN_WAIT2 that lasts one RTT of a
paced lab, cheap enough (one small netlink dump) to run all the time."""


def _snapshot(info: sockdiag.SockInfo) -> Snapshot:
    return Snapshot(
        key=(info.src, info.sport, info.dst, info.dport),
        state=TCP_STATES.get(info.state, f"UNKNOWN_{info.state}"),
        timer=TIMERS.get(info.timer, str(info.timer)),
        expires_ms=info.expires_ms if info.timer else None,
        retrans=info.retrans,
    )


def port_filter(ports: Iterable[int]) -> Callable[[sockdiag.SockInfo], bool]:
    """Sockets with one of ``ports`` at either end."""
    wanted = frozenset(ports)
    if not wanted:
        return lambda _info: True
    return lambda info: info.sport in wanted or info.dport in wanted


class Observer:
    """Polls the namespace it was created in (or ``netns``), logs changes.

    ``note(key, fact)`` passes what the owning program knows for certain
    (it read EOF, it closed, it got a reset) to the state machine, so a
    too-quick CLOSE_WAIT → LAST_ACK can be inferred instead of guessed.
    """

    def __init__(
        self,
        log: Any,
        *,
        match: Callable[[sockdiag.SockInfo], bool],
        passive_ports: Iterable[int] = (),
        vouched: bool = True,
        interval: float = DEFAULT_INTERVAL,
        netns: str | None = None,
    ) -> None:
        self.log = log
        self.match = match
        self.interval = interval
        self.netns = netns
        self.tracker = SocketTracker(passive_ports=passive_ports, vouched=vouched)
        self.polls = 0
        self._changed = trio.Event()
        self._sock: socket.socket | None = None
        # ident -> snapshot (None: a socket we do not watch), the previous
        # poll's idents with their timer values, and each watched key's ident
        self._cache: dict[sockdiag.Ident, Snapshot | None] = {}
        self._idents: dict[sockdiag.Ident, int] = {}
        self._expires: dict[sockdiag.Ident, int] = {}
        self._expires_at = 0.0
        self._ident_of: dict[Key, sockdiag.Ident] = {}

    def note(self, key: Key, *facts: Fact) -> None:
        """The program just did something to socket ``key`` (and so knows
        ``facts``): record them, and poll now rather than at the next tick, so
        the state the action caused is seen while it lasts."""
        for fact in facts:
            self.tracker.note(key, fact)
        if self._sock is not None:
            self.poll_once()

    def poll_once(self) -> list[Change]:
        """One dump and diff (blocking; a small dump takes tens of µs).

        Steady state is cheap: sockets are compared by their raw ident
        (state, timer, retrans, ports, addresses); when the set of idents is
        the one of the previous poll, nothing changed and nothing is decoded.
        """
        if self._sock is None:
            self._sock = sockdiag.open_diag_socket(self.netns)
        now = time.time()
        current = dict(sockdiag.dump_idents(self._sock))
        self.polls += 1
        self._expires = current
        self._expires_at = now
        if current.keys() == self._idents.keys():
            return []
        cache = self._cache
        snapshot: dict[Key, Snapshot] = {}
        for ident, expires in current.items():
            if ident in cache:
                snap = cache[ident]
            else:
                info = sockdiag.decode_ident(ident, expires)
                snap = _snapshot(info) if self.match(info) else None
                cache[ident] = snap
            if snap is None:
                continue
            # During the TIME_WAIT hand-over a dump can list the full
            # socket and its timewait successor; keep the later state.
            prev = snapshot.get(snap.key)
            if prev is None or _later(snap.state, prev.state):
                snapshot[snap.key] = snap
                self._ident_of[snap.key] = ident
        self._idents = current
        if len(cache) > 2 * len(current) + 1024:
            self._cache = {ident: cache[ident] for ident in current}
        changes = self.tracker.update(snapshot, now)
        for change in changes:
            events.emit(self.log, change.record, ts=round(change.ts, 6))
        for key in [k for k in self._ident_of if k not in snapshot]:
            del self._ident_of[key]
        if changes:
            self._changed.set()
            self._changed = trio.Event()
        return changes

    def expires_ms(self, key: Key) -> int | None:
        """What is left of ``key``'s timer now (TIME_WAIT: of its 60 s)."""
        ident = self._ident_of.get(key)
        expires = self._expires.get(ident) if ident is not None else None
        if expires is None:
            return None
        return max(0, expires - round((time.time() - self._expires_at) * 1000))

    @property
    def live(self) -> dict[Key, str]:
        return self.tracker.live

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll until cancelled.  ``started()`` after the first poll, so every
        socket the caller opens afterwards is seen from its first state."""
        self.log.info(events.OBSERVER_START, interval_ms=self.interval * 1000)
        try:
            self.poll_once()
            task_status.started()
            while True:
                await trio.sleep(self.interval)
                self.poll_once()
        finally:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    async def wait_quiet(self, *, ignore_listeners: bool = True) -> None:
        """Return once no watched socket is left (listeners aside)."""
        while any(k[3] != 0 or not ignore_listeners for k in self.live):
            changed = self._changed
            await changed.wait()

    def remaining(self) -> list[dict[str, Any]]:
        """Sockets still alive, with their state and timer (TIME_WAIT: ms left)."""
        out = []
        for key, state in sorted(self.live.items()):
            snap = self.tracker.snapshot_of(key)
            role = self.tracker.role_of(key)
            out.append(
                {
                    "conn": self.tracker.conn_of(key, role),
                    "state": state,
                    "timer": snap.timer if snap else "off",
                    "expires_ms": self.expires_ms(key) if snap and snap.timer != "off" else None,
                }
            )
        return out


_ORDER = {
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


def _later(a: str, b: str) -> bool:
    return _ORDER.get(a, -1) > _ORDER.get(b, -1)


async def observe_until_quiet(
    observer: Observer, observe_for: float | None, cancel: trio.CancelScope | None = None
) -> str:
    """After the conversation: wait until the sockets are gone or
    ``observe_for`` seconds pass; log ``observer_stop`` with what is left."""
    reason = "sockets_gone"
    with trio.move_on_after(observe_for if observe_for is not None else float("inf")) as scope:
        await observer.wait_quiet()
    if scope.cancelled_caught:
        reason = "deadline"
    left = [r for r in observer.remaining() if r["state"] != "LISTEN"]
    observer.log.info(events.OBSERVER_STOP, reason=reason, remaining=left, polls=observer.polls)
    if cancel is not None:
        cancel.cancel()
    return reason
