"""The socket-state observer: a trio task that reports ``tcp_state`` records
for the sockets it was asked to watch, from two sources merged.

Both daemons run one in their nursery, for their own sockets; ``tcplab
watch`` runs one for any namespace.

**The tracepoint** (when tracefs can be used: root, or CAP_SYS_ADMIN with
tracefs mounted).  The observer opens its own ftrace instance
(``instances/<name>``, e.g. ``tcplab-<lab>-cli``) with ``sock:inet_sock_set_state``
and ``tcp:tcp_retransmit_skb``, ``tcp_retransmit_synack``, ``tcp_send_reset``,
``tcp_receive_reset``, a filter on its own address, and the ``mono`` clock,
converted to the wall clock.  Tracepoints carry no network namespace: labs
side by side are told apart by their addresses (each lab has its own,
:mod:`tcplab.topology`), checked again here by ``match``.  Each transition
is reported once, with the kernel's time (``source="trace"``).

**sock_diag** (always): a dump of the namespace every ``interval`` (in a
worker thread once dumps get slow: the event loop never waits on a big one);
and exact lookups of one socket
(``note()``, a hand-over to a minisock).  With the tracepoint on, a dump
speaks only for what the tracepoint cannot see — request sockets, timewait
minisocks — and keeps timers up to date.  Without it (compose containers),
dumps and lookups are the whole story, as ``poll`` and ``inferred`` records.

The merging is :class:`daemons.statemachine.SocketTracker` (pure); this
module sleeps, reads and logs.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import time
from collections.abc import Callable, Iterable
from typing import Any

import trio

from daemons import sockdiag
from daemons.diagsock import DiagSocket
from daemons.statemachine import Fact, Key, Snapshot, SocketTracker, TraceTransition, merge_dump
from tcplab import tracefs
from tcplab.events import (
    CLOSED,
    TCP_STATES,
    TIMERS,
    ObserverStart,
    ObserverStop,
    Record,
    TcpReset,
    TcpRetransmit,
    TcpState,
    emit,
    endpoint,
    state_name,
)
from tcplab.tracebuf import TraceEvent

DEFAULT_INTERVAL = 0.005
"""5 ms: short enough to see a SYN_RECV or FIN_WAIT2 that lasts one RTT of a
paced lab, cheap enough (one small netlink dump) to run all the time."""

THREAD_DUMP_S = 0.0005
"""A dump slower than this (thousands of sockets) runs in a worker thread."""

TRACE_EVENTS = (
    "sock/inet_sock_set_state",
    "tcp/tcp_retransmit_skb",
    "tcp/tcp_retransmit_synack",
    "tcp/tcp_send_reset",
    "tcp/tcp_receive_reset",
)


def _snapshot(info: sockdiag.SockInfo) -> Snapshot:
    return Snapshot(
        key=(info.src, info.sport, info.dst, info.dport),
        state=TCP_STATES.get(info.state, f"UNKNOWN_{info.state}"),
        timer=TIMERS.get(info.timer, str(info.timer)),
        expires_ms=info.expires_ms if info.timer else None,
        retrans=info.retrans,
    )


def port_filter(ports: Iterable[int]) -> Callable[[Key], bool]:
    """Sockets with one of ``ports`` at either end."""
    wanted = frozenset(ports)
    if not wanted:
        return lambda _key: True
    return lambda key: key[1] in wanted or key[3] in wanted


def local_filter(host: str, port: int) -> Callable[[Key], bool]:
    """A listener's sockets: local port ``port`` on ``host`` (any address
    when ``host`` is a wildcard).  The tracepoints see every namespace's
    sockets, so "port 7007 at either end" would take in the client's too."""
    if ipaddress.ip_address(host).is_unspecified:
        return lambda key: key[1] == port
    return lambda key: key[1] == port and key[0] == host


def trace_filters(address: str | None) -> dict[str, str]:
    """ftrace filters keeping the events of sockets with ``address`` at one
    end (IPv4; the kernel compares ``__u8 saddr[4]`` as a little-endian u32,
    which is why the number is built that way).  IPv6 addresses cannot be
    compared in a filter (16 bytes): those are filtered here, by ``match``."""
    filters = {"sock/inet_sock_set_state": "protocol == 6"}
    if address is None:
        return filters
    ip = ipaddress.ip_address(address)
    if ip.version != 4 or ip.is_unspecified:
        return filters
    number = int.from_bytes(ip.packed, "little")
    by_address = f"family == 10 || saddr == {number:#x} || daddr == {number:#x}"
    filters["sock/inet_sock_set_state"] = f"protocol == 6 && ({by_address})"
    for name in ("tcp/tcp_retransmit_skb", "tcp/tcp_retransmit_synack", "tcp/tcp_receive_reset"):
        filters[name] = by_address
    return filters


@dataclasses.dataclass(frozen=True, slots=True)
class TraceConfig:
    """The observer's own ftrace instance: its name and its filters."""

    instance: str
    filters: dict[str, str] = dataclasses.field(default_factory=dict)


class WallClock:
    """Converts the trace's ``mono`` clock (CLOCK_MONOTONIC, ns) to the wall
    clock every component stamps with.  The offset is sampled with the two
    clock reads closest together, and sampled again every second, since NTP
    may slew the wall clock."""

    RESAMPLE_S = 1.0

    def __init__(self) -> None:
        self._offset_ns = 0
        self._sampled = float("-inf")

    def _sample(self) -> None:
        self._offset_ns = tracefs.wall_offset_ns()
        self._sampled = time.monotonic()

    def wall(self, mono_ns: int) -> float:
        if time.monotonic() - self._sampled > self.RESAMPLE_S:
            self._sample()
        return (mono_ns + self._offset_ns) / 1e9


class Observer:
    """Observes the namespace it was created in (or ``netns``), logs changes.

    ``note(key, fact)`` passes what the owning program knows for certain
    (it read EOF, it closed, it got a reset) to the state machine, so a
    too-quick CLOSE_WAIT → LAST_ACK can be inferred instead of guessed.
    """

    def __init__(
        self,
        log: Any,
        *,
        match: Callable[[Key], bool],
        passive_ports: Iterable[int] = (),
        vouched: bool = True,
        interval: float = DEFAULT_INTERVAL,
        netns: str | None = None,
        trace: TraceConfig | None = None,
    ) -> None:
        self.log = log
        self.match = match
        self.interval = interval
        self.netns = netns
        self.trace_config = trace
        self.passive_ports = frozenset(passive_ports)
        self.vouched = vouched
        self.tracker = SocketTracker(passive_ports=passive_ports, vouched=vouched)
        self.polls = 0
        self.lookups = 0
        self.trace_events = 0
        self._changed = trio.Event()
        self._lookup_sock: DiagSocket | None = None
        self._dump_sock: DiagSocket | None = None
        self._tracer: tracefs.Instance | None = None
        self._clock = WallClock()
        self._dump_lock = trio.Lock()
        self._dump_cost = 0.0
        self._last_dump: float | None = None
        # the fast path: each raw ident decoded once (None: a socket we do
        # not watch); the previous dump's idents; each key's ident and timer
        self._cache: dict[sockdiag.Ident, Snapshot | None] = {}
        self._idents: dict[sockdiag.Ident, int] = {}
        self._expires: dict[sockdiag.Ident, int] = {}
        self._expires_at = 0.0
        self._ident_of: dict[Key, sockdiag.Ident] = {}

    # --- what the owner tells us ------------------------------------------------

    def note(self, key: Key, *facts: Fact) -> None:
        """The program just did something to socket ``key`` (and so knows
        ``facts``).  Without the tracepoint, look that one socket up now, so
        the state the action caused is seen while it lasts; with it, the
        tracepoint has already said."""
        for fact in facts:
            self.tracker.note(key, fact)
        if self._tracer is None and self._lookup_sock is not None:
            self.lookup(key)

    def connecting(self, key: Key) -> None:
        """The program's connect() on ``key`` is under way (the kernel gave it
        its port): with the tracepoint on, this ties the socket's SYN_SENT,
        traced before it had a port, to its four-tuple at once."""
        if self._tracer is not None:
            self._log(self.tracker.connecting(key))

    # --- sources ----------------------------------------------------------------------

    def lookup(self, key: Key) -> list[TcpState]:
        """One exact sock_diag lookup, on the loop (one small round trip)."""
        assert self._lookup_sock is not None
        seen_after = time.time()
        info = self._lookup_sock.lookup(key)
        now = time.time()
        self.lookups += 1
        snap = _snapshot(info) if info is not None else None
        records = self.tracker.lookup(
            key, snap, now, self._last_dump or seen_after, started=seen_after
        )
        self._log(records)
        return records

    def _dump_blocking(self) -> tuple[float, float, dict[sockdiag.Ident, int]]:
        assert self._dump_sock is not None
        started = time.time()
        current = dict(self._dump_sock.dump_idents())
        return started, time.time(), current

    async def poll_once(self) -> list[TcpState]:
        """One dump and diff.  Dumps never overlap.  A dump that took long
        (many sockets: more than :data:`THREAD_DUMP_S`) moves the next ones
        to a worker thread, so the event loop never waits on one; a quick one
        runs on the loop (handing a 100 µs dump to a thread costs more than
        the dump)."""
        async with self._dump_lock:
            if self._dump_cost > THREAD_DUMP_S:
                started, now, current = await trio.to_thread.run_sync(self._dump_blocking)
            else:
                started, now, current = self._dump_blocking()
            self._dump_cost = now - started
            return self._diff(started, now, current)

    def poll_sync(self) -> list[TcpState]:
        """A dump on the calling thread (for the first one, before the loop runs)."""
        started, now, current = self._dump_blocking()
        return self._diff(started, now, current)

    def _diff(
        self, started: float, now: float, current: dict[sockdiag.Ident, int]
    ) -> list[TcpState]:
        # every transition the dump shows has its trace event in the ring
        # buffer already (the tracepoint fires before the state is stored):
        # read it first, so the dump only adds what the trace cannot see
        self.drain_trace()
        seen_after = self._last_dump
        self._last_dump = started
        self.polls += 1
        self._expires = current
        self._expires_at = now
        if current.keys() == self._idents.keys():
            return []
        cache = self._cache
        found: list[Snapshot] = []
        idents: dict[Key, sockdiag.Ident] = {}
        for ident, expires in current.items():
            if ident in cache:
                snap = cache[ident]
            else:
                info = sockdiag.decode_ident(ident, expires)
                snap = _snapshot(info)
                if not self.match(snap.key):
                    snap = None
                cache[ident] = snap
            if snap is not None:
                found.append(snap)
                idents[snap.key] = ident
        snapshot = merge_dump(found)
        self._idents = current
        self._ident_of = {key: idents[key] for key in snapshot}
        if len(cache) > 2 * len(current) + 1024:
            self._cache = {ident: cache[ident] for ident in current}
        records = self.tracker.update(snapshot, now, seen_after, started=started)
        self._log(records)
        return records

    def drain_trace(self) -> None:
        """Read and report every trace event waiting in the ring buffer."""
        if self._tracer is None:
            return
        for event in self._tracer.read_available():
            self._on_trace(event)

    def _on_trace(self, event: TraceEvent) -> None:
        key: Key = (event.saddr, event.sport, event.daddr, event.dport)
        if not self.match(key):
            return
        self.trace_events += 1
        ts = self._clock.wall(event.ts_ns)
        local = endpoint(event.saddr, event.sport)
        records: list[Record] = []
        if event.kind == "set_state":
            if event.oldstate is None or event.newstate is None:
                return
            new = state_name(event.newstate)
            successor: Snapshot | None = None
            looked_up: float | None = None
            if new == CLOSED and key[1] and key[3] and self._lookup_sock is not None:
                # a minisock takes over before the full socket closes: is there one?
                info = self._lookup_sock.lookup(key)
                looked_up = time.time()
                self.lookups += 1
                successor = _snapshot(info) if info is not None else None
            transition = TraceTransition(key, event.skaddr, state_name(event.oldstate), new, ts)
            records.extend(self.tracker.trace(transition, successor, looked_up))
        elif event.kind in ("retransmit", "retransmit_synack"):
            records.append(
                TcpRetransmit(
                    ts=ts,
                    conn=self.tracker.conn(key),
                    local=local,
                    state=state_name(event.state) if event.state is not None else "SYN_RECV",
                    synack=event.kind == "retransmit_synack",
                )
            )
        elif event.kind in ("send_reset", "receive_reset"):
            records.append(
                TcpReset(
                    ts=ts,
                    conn=self.tracker.conn(key),
                    local=local,
                    direction="sent" if event.kind == "send_reset" else "received",
                    state=state_name(event.state) if event.state else None,
                    reason=event.reason,
                )
            )
        self._log(records)

    def _log(self, records: Iterable[Record]) -> None:
        changed = False
        for record in records:
            emit(self.log, record)
            changed = True
        if changed:
            self._changed.set()
            self._changed = trio.Event()

    # --- views ----------------------------------------------------------------------

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

    @property
    def traced(self) -> bool:
        return self._tracer is not None

    # --- running -----------------------------------------------------------------------

    def _open_trace(self) -> str | None:
        """Open the tracepoint source; the reason when it cannot be used."""
        config = self.trace_config
        if config is None:
            return "not asked for"
        reason = tracefs.unavailable_reason()
        if reason is not None:
            return reason
        try:
            self._tracer = tracefs.Instance.create(
                config.instance, events=TRACE_EVENTS, filters=config.filters, clock="mono"
            )
        except OSError as exc:
            return f"cannot open ftrace instance {config.instance}: {exc}"
        self.tracker.traced = True
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Observe until cancelled.  ``started()`` after the first dump, so
        every socket the caller opens afterwards is seen from its first state."""
        self._lookup_sock = DiagSocket.open(self.netns)
        self._dump_sock = DiagSocket.open(self.netns)
        unavailable = self._open_trace()
        try:
            emit(
                self.log,
                ObserverStart(
                    ts=time.time(),
                    interval_ms=self.interval * 1000,
                    sources=("trace", "poll") if self._tracer else ("poll",),
                    trace_instance=(
                        self.trace_config.instance if self._tracer and self.trace_config else None
                    ),
                    trace_unavailable=unavailable if self.trace_config else None,
                ),
            )
            self.poll_sync()
            async with trio.open_nursery() as nursery:
                if self._tracer is not None:
                    for fd in self._tracer.fds:
                        nursery.start_soon(self._watch_fd, fd)
                task_status.started()
                while True:
                    await trio.sleep(self.interval)
                    await self.poll_once()
        finally:
            for sock in (self._lookup_sock, self._dump_sock):
                if sock is not None:
                    sock.close()
            self._lookup_sock = self._dump_sock = None
            if self._tracer is not None:
                self._tracer.remove()

    async def _watch_fd(self, fd: int) -> None:
        """Report trace events as soon as one CPU's ring buffer has some."""
        while True:
            await trio.lowlevel.wait_readable(fd)
            self.drain_trace()
            await trio.lowlevel.checkpoint()

    async def until_gone(self, keys: Iterable[Key]) -> None:
        """Return once none of ``keys`` is alive (the caller sets a deadline)."""
        wanted = set(keys)
        while wanted & self.live.keys():
            changed = self._changed
            await changed.wait()

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
            out.append(
                {
                    "conn": self.tracker.conn(key),
                    "state": state,
                    "timer": snap.timer if snap else "off",
                    "expires_ms": self.expires_ms(key) if snap and snap.timer != "off" else None,
                }
            )
        return out

    def stop_record(self, reason: str) -> ObserverStop:
        left = [r for r in self.remaining() if r["state"] != "LISTEN"]
        return ObserverStop(
            ts=time.time(),
            reason=reason,
            remaining=tuple(left),
            polls=self.polls,
            lookups=self.lookups,
            trace_events=self.trace_events if self._tracer else None,
            trace_lost=self._tracer.lost if self._tracer else None,
        )


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
    # one last look, so what is left is reported as it is now
    await observer.poll_once()
    emit(observer.log, observer.stop_record(reason))
    if cancel is not None:
        cancel.cancel()
    return reason
