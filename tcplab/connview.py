"""A run's records seen per connection (pure).

The observers report what each kernel object did: a request socket's
SYN_RECV, the full socket's transitions (among them ``LISTEN → SYN_RECV``
when the listener makes a child, and ``→ CLOSED`` when a timewait minisock
takes the connection over), the minisock's TIME_WAIT.  A person, and a
scenario's expectations, think of one connection going through states.
:func:`paths` folds the records into that: for each side and connection,
the states in order, each with the record that entered it.

Also here, once: what time zero of a run is (:func:`time_zero`,
:func:`is_time_zero`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence

from core.events import CLOSED, ObserverStop, Record, Segment, TcpState


@dataclasses.dataclass(frozen=True, slots=True)
class Step:
    """One state of a connection, and the record that entered it (None for
    the CLOSED it starts from)."""

    state: str
    record: TcpState | None


@dataclasses.dataclass(frozen=True, slots=True)
class ConnPath:
    conn: str
    component: str
    steps: tuple[Step, ...]

    @property
    def states(self) -> list[str]:
        return [s.state for s in self.steps]

    @property
    def records(self) -> list[TcpState]:
        return [s.record for s in self.steps if s.record is not None]

    def entered(self, state: str) -> TcpState | None:
        """The record that entered ``state`` first (None: never)."""
        return next((s.record for s in self.steps if s.state == state and s.record), None)

    def left(self, state: str) -> TcpState | None:
        """The record that left ``state`` first (None: never)."""
        for before, after in itertools.pairwise(self.steps):
            if before.state == state:
                return after.record
        return None

    def time_in(self, state: str) -> float | None:
        """How long the connection was in ``state`` the first time (ms), as
        the record leaving it says; None when unknown."""
        record = self.left(state)
        return record.in_old_ms if record is not None else None


def is_folded(record: TcpState, current: str) -> bool:
    """A record that does not change the connection's state: a full socket
    handing its connection to a minisock (``→ CLOSED``, ``handed_to``), or a
    child socket born in the state its request socket was already in."""
    if record.handed_to is not None:
        return True
    return record.new == current


def paths(records: Iterable[Record], component: str) -> list[ConnPath]:
    """``component``'s connections, in order of first appearance, each with
    its states.  ``records`` must be in the order ``component`` logged them
    (a run's records are)."""
    steps: dict[str, list[Step]] = {}
    for record in records:
        if not isinstance(record, TcpState) or record.component != component:
            continue
        if record.is_listener:
            continue
        path = steps.setdefault(record.conn, [Step(CLOSED, None)])
        current = path[-1].state
        if record.handed_to is not None:
            # the full socket's end is the minisock's beginning: the
            # connection went to the minisock's state at this exact moment
            if record.shown_new != current:
                path.append(Step(record.shown_new, record))
            continue
        if is_folded(record, current):
            continue
        path.append(Step(record.new, record))
    return [ConnPath(conn, component, tuple(s)) for conn, s in steps.items()]


def until_stop(records: Sequence[Record], component: str) -> list[Record]:
    """``component``'s records up to its ``observer_stop`` (all of them if it
    has none): the run as that side observed it.  What comes after is the
    program's exit — the kernel closing the sockets it kept open."""
    mine = [r for r in records if r.component == component]
    for index, record in enumerate(mine):
        if isinstance(record, ObserverStop):
            return mine[:index]
    return mine


def listener_states(records: Iterable[Record], component: str) -> list[TcpState]:
    """``component``'s listener records, in order."""
    return [
        r for r in records if isinstance(r, TcpState) and r.component == component and r.is_listener
    ]


def is_time_zero(record: Record) -> bool:
    """Whether ``record`` is of the kind that starts a run's clock: a SYN at
    the middlebox (the first one does).  :func:`time_zero` uses it on a
    finished run; the live ladder, which learns time zero as records
    arrive, asks it of each record until one answers yes."""
    return isinstance(record, Segment) and "syn" in record.tags


def time_zero(records: Sequence[Record]) -> float:
    """Where a run's clock starts: the first SYN at the middlebox, else the
    earliest record (a run whose SYN never reached the middlebox)."""
    syn = [r.ts for r in records if is_time_zero(r)]
    if syn:
        return min(syn)
    return min((r.ts for r in records), default=0.0)
