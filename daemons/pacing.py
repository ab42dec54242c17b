"""How often the observer looks, and when a look is worth it (pure).

The observer must see short-lived states (a SYN_RECV or a FIN_WAIT2 lasts
one round trip of a paced lab) without spending its process on looking: a
lab has a handful of sockets, a load test thousands, and a dump of
thousands costs milliseconds.  These are the rules that keep the looking
cheap — how long to pause between sock_diag dumps, when a dump moves to a
worker thread, when trace events may gather before a read, when what the
owner did to a socket calls for an exact lookup — as functions of what the
last looks cost and what is known, so they can be tested without a kernel.
:mod:`daemons.observer` measures the costs and sleeps.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

from daemons.inference import Fact

DEFAULT_INTERVAL = 0.005
"""5 ms: short enough to see a SYN_RECV or FIN_WAIT2 that lasts one RTT of a
paced lab, cheap enough (one small netlink dump) to run all the time."""

POLL_DUTY = 10.0
"""A poll that took ``c`` seconds waits at least ``POLL_DUTY × c`` before the
next one: at most about a tenth of the time goes to polling."""
MAX_POLL_INTERVAL = 0.25
"""However dear polls get, one every quarter second (TIME_WAIT, request
sockets that linger, timers stay visible)."""
POLL_COST_WINDOW = 4
"""How many recent polls' costs the back-off looks at (their minimum)."""

THREAD_DUMP_S = 0.0005
"""A dump slower than this (thousands of sockets) runs in a worker thread."""

TRACE_BUSY = 32
"""A read of the trace that finds this many events means a busy lab..."""
TRACE_GATHER_S = 0.002
"""... and the next read waits this long (the events keep the kernel's time
stamps: only the line is written a little later)."""


def poll_interval(base: float, cost: float) -> float:
    """The pause before the next sock_diag dump, given the configured
    interval ``base`` and what the last poll cost (wall time, seconds).
    Cheap polls (a lab's handful of sockets: ~0.1 ms) keep ``base``; a
    dump of thousands of sockets backs off, never beyond
    :data:`MAX_POLL_INTERVAL` (nor below ``base``)."""
    return max(base, min(MAX_POLL_INTERVAL, cost * POLL_DUTY))


class PollPacer:
    """The pause between polls, from what the recent ones cost.

    Thousands of sockets make a dump dear: poll less often.  The cheapest of
    the last :data:`POLL_COST_WINDOW` polls counts, so a poll preempted once
    (another process, a GC pass) is not taken for a dear dump."""

    def __init__(self, base: float) -> None:
        self.base = base
        self._recent: collections.deque[float] = collections.deque(maxlen=POLL_COST_WINDOW)

    def first(self) -> float:
        """The pause before the first poll after the initial one."""
        return self.base

    def after(self, cost: float) -> float:
        """A poll just cost ``cost`` seconds: the pause before the next."""
        self._recent.append(cost)
        return poll_interval(self.base, min(self._recent))


def dump_in_thread(last_cost: float) -> bool:
    """Whether the next dump goes to a worker thread, given what the last
    one took: a slow one would hold up the event loop, while handing a
    100 µs dump to a thread costs more than the dump."""
    return last_cost > THREAD_DUMP_S


def looks_after_note(facts: Sequence[Fact], state: str | None, look: bool, *, traced: bool) -> bool:
    """Whether an owner's note — it just acted on a socket known to be in
    ``state``, and so knows ``facts`` — calls for an exact sock_diag lookup
    of that socket now, so the state the action caused is seen while it
    lasts.  Not with the tracepoint on: it has already said.  Not when the
    owner asked for no look (``look``: it acts again at once, and one look
    after both tells what both did).  Nor for an accept() (no facts) of a
    connection already known ESTABLISHED: the call changed nothing (under a
    burst the dumps see most of the accept queue first)."""
    if not facts and state == "ESTABLISHED":
        return False
    return look and not traced


def trace_gather_s(found: int) -> float:
    """How long to let trace events gather before the next read, given how
    many the last read found: after a burst, one read of a full page instead
    of a read, and a wake-up, every few events; otherwise none (0)."""
    return TRACE_GATHER_S if found >= TRACE_BUSY else 0.0
