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

Under load (thousands of sockets: ``benchmarks/echo_load.py``) the work is
kept to what changed: a dump is compared with the one before as raw idents
(set differences, :mod:`daemons.dumpdiff`), and only new or vanished sockets
are decoded and handed to the tracker; a dump that took ``c`` waits ``10 c``
before the next one (:mod:`daemons.pacing`, at most a quarter second); the
tracepoint ``→ CLOSE`` is looked up only from states a minisock can follow
(:func:`daemons.traceevents.needs_lookup`); a server's trace filter keeps
its own sockets only (:mod:`daemons.matching`), and a read that finds many
events lets the next ones gather for 2 ms.

Every decision is made in a pure module — the merging is
:class:`daemons.statemachine.SocketTracker` — and this one sleeps, reads,
keeps the clocks and logs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import trio

from core import netns, netstat, tracefs
from core.events import ObserverStart, ObserverStop, Record, TcpState, emit
from core.tracebuf import TraceEvent
from daemons import sockdiag
from daemons.diagsock import DiagSocket
from daemons.dumpdiff import DumpIndex, dump_records, snapshot_of
from daemons.inference import Fact
from daemons.matching import TRACE_EVENTS, TraceConfig
from daemons.pacing import (
    DEFAULT_INTERVAL,
    PollPacer,
    dump_in_thread,
    looks_after_note,
    trace_gather_s,
)
from daemons.statemachine import SocketTracker
from daemons.traceevents import event_key, event_record, needs_lookup, transition_of
from daemons.tracking import Key, Snapshot


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
        self._changed: trio.Event | None = None
        """Set at the next change; made only when someone waits for one."""
        self._counters: dict[str, int] = {}
        """The namespace's TCP counters when observing began."""
        self._lookup_sock: DiagSocket | None = None
        self._dump_sock: DiagSocket | None = None
        self._tracer: tracefs.Instance | None = None
        self._clock = WallClock()
        self._dump_lock = trio.Lock()
        self._dump_cost = 0.0
        self._poll_cost = 0.0
        self._last_dump: float | None = None
        # the last dump: its watched sockets (only what changed is decoded),
        # each ident's timer expiry and when the dump was answered
        self._index = DumpIndex(self.match)
        self._expires: dict[sockdiag.Ident, int] = {}
        self._expires_at = 0.0

    # --- what the owner tells us ------------------------------------------------

    def note(self, key: Key, *facts: Fact, look: bool = True) -> None:
        """The program just did something to socket ``key`` (and so knows
        ``facts``).  Without the tracepoint, look that one socket up now, so
        the state the action caused is seen while it lasts; with it, the
        tracepoint has already said.  ``look=False``: the program is about
        to act on the socket again at once (read EOF, then close) and will
        say so; one look after both tells what both did.  Without facts (an
        accept) there is no look either when the socket is already known to
        be ESTABLISHED: the call changed nothing."""
        self.tracker.own(key)
        for fact in facts:
            self.tracker.note(key, fact)
        traced = self._tracer is not None
        state = self.tracker.state_of(key)
        if self._lookup_sock is not None and looks_after_note(facts, state, look, traced=traced):
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
        snap = snapshot_of(info) if info is not None else None
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
        (many sockets: :func:`daemons.pacing.dump_in_thread`) moves the next
        ones to a worker thread, so the event loop never waits on one; a
        quick one runs on the loop."""
        async with self._dump_lock:
            if dump_in_thread(self._dump_cost):
                started, now, current = await trio.to_thread.run_sync(self._dump_blocking)
            else:
                started, now, current = self._dump_blocking()
            self._dump_cost = now - started
            diffing = time.perf_counter()
            records = self._diff(started, now, current)
            # what this poll itself cost (dump and diff), not the time other
            # tasks ran while it waited for the lock or the thread
            self._poll_cost = self._dump_cost + (time.perf_counter() - diffing)
            return records

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
        records = dump_records(self.tracker, self._index, current, now, seen_after, started=started)
        self._log(records)
        return records

    def drain_trace(self) -> int:
        """Read and report every trace event waiting in the ring buffer;
        how many there were."""
        if self._tracer is None:
            return 0
        found = self._tracer.read_available()
        for event in found:
            self._on_trace(event)
        return len(found)

    def _on_trace(self, event: TraceEvent) -> None:
        key = event_key(event)
        if not self.match(key):
            return
        self.trace_events += 1
        ts = self._clock.wall(event.ts_ns)
        if event.kind != "set_state":
            record = event_record(event, ts, self.tracker.conn(key))
            self._log([record] if record is not None else [])
            return
        transition = transition_of(event, ts)
        if transition is None:
            return
        successor: Snapshot | None = None
        looked_up: float | None = None
        if needs_lookup(transition) and self._lookup_sock is not None:
            # a minisock takes over before the full socket closes: is there one?
            info = self._lookup_sock.lookup(key)
            looked_up = time.time()
            self.lookups += 1
            successor = snapshot_of(info) if info is not None else None
        self._log(self.tracker.trace(transition, successor, looked_up))

    def _log(self, records: Iterable[Record]) -> None:
        changed = False
        for record in records:
            emit(self.log, record)
            changed = True
        if changed and self._changed is not None:
            self._changed.set()
            self._changed = None

    # --- views ----------------------------------------------------------------------

    def expires_ms(self, key: Key) -> int | None:
        """What is left of ``key``'s timer now (TIME_WAIT: of its 60 s)."""
        ident = self._index.ident_of(key)
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
                config.instance,
                events=TRACE_EVENTS,
                filters=config.filters,
                clock="mono",
                buffer_kb=config.buffer_kb,
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
        self._counters = self.read_counters()
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
                pacer = PollPacer(self.interval)
                pause = pacer.first()
                while True:
                    await trio.sleep(pause)
                    await self.poll_once()
                    pause = pacer.after(self._poll_cost)
        finally:
            for sock in (self._lookup_sock, self._dump_sock):
                if sock is not None:
                    sock.close()
            self._lookup_sock = self._dump_sock = None
            if self._tracer is not None:
                self._tracer.remove()

    async def _watch_fd(self, fd: int) -> None:
        """Report trace events as soon as one CPU's ring buffer has some.
        When a read finds many (a burst of connections), let the next ones
        gather first (:func:`daemons.pacing.trace_gather_s`)."""
        while True:
            await trio.lowlevel.wait_readable(fd)
            gather = trace_gather_s(self.drain_trace())
            if gather:
                await trio.sleep(gather)
            else:
                await trio.lowlevel.checkpoint()

    async def until_gone(self, keys: Iterable[Key]) -> None:
        """Return once none of ``keys`` is alive (the caller sets a deadline)."""
        wanted = set(keys)
        while wanted & self.live.keys():
            await self._next_change()

    async def wait_quiet(self, *, ignore_listeners: bool = True) -> None:
        """Return once no watched socket is left (listeners aside)."""
        while any(k[3] != 0 or not ignore_listeners for k in self.live):
            await self._next_change()

    async def _next_change(self) -> None:
        if self._changed is None:
            self._changed = trio.Event()
        await self._changed.wait()

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

    def read_counters(self) -> dict[str, int]:
        """The namespace's TCP counters now (a read of two small files)."""
        with netns.inside(self.netns):
            return netstat.read()

    def stop_record(self, reason: str) -> ObserverStop:
        looked = time.time()  # the counters are as of now: the moment before the read
        left = [r for r in self.remaining() if r["state"] != "LISTEN"]
        counters = netstat.moved(self._counters, self.read_counters()) if self._counters else None
        return ObserverStop(
            ts=looked,
            reason=reason,
            remaining=tuple(left),
            polls=self.polls,
            lookups=self.lookups,
            trace_events=self.trace_events if self._tracer else None,
            trace_lost=self._tracer.lost if self._tracer else None,
            counters=counters,
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
