"""Cause before effect: checking a run's records against the named rules,
and the causal order a picture draws them in (pure).

Every record says when its fact happened (:mod:`core.events`): exactly
(a tracepoint, a frame's receive timestamp, the moment before a call) or
within an interval (a poll saw a state at ``ts``; it began after
``seen_after``).  The rules (:mod:`tcplab.causes`) pair facts that cause
one another on one connection.  A pair breaks a rule only when the cause
cannot have come before the effect: the earliest the cause can have
happened is later than the latest the effect can have.

:func:`check` lists the violations; the ladder orders its rows with
:func:`order` so that it never draws an effect before its cause, moving a
polled line that came too late to just before what it caused.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Sequence

from core.events import App, Record, Segment, TcpReset, TcpRetransmit, TcpState
from tcplab.causes import Link, links


@dataclasses.dataclass(frozen=True, slots=True)
class Violation:
    link: Link
    by_ms: float
    """How much later the cause's earliest time is than the effect's latest."""

    def describe(self, t0: float = 0.0) -> str:
        c, e = self.link.cause, self.link.effect
        return (
            f"{self.link.rule}: {describe(c)} at {_ms(earliest(c), t0)} "
            f"after {describe(e)} at {_ms(latest(e), t0)} ({self.by_ms:.3f} ms)"
        )


def _ms(ts: float, t0: float) -> str:
    return f"{(ts - t0) * 1000:+.3f} ms"


def describe(record: Record) -> str:
    """A short name for a record, for messages."""
    if isinstance(record, TcpState):
        return f"{record.component} {record.old}→{record.new} ({record.source})"
    if isinstance(record, Segment):
        return f"{record.dir} {record.flags} {record.rseq}:{record.rack} ({record.verdict})"
    if isinstance(record, App):
        return f"{record.component} {record.kind.removeprefix('app_')}()"
    if isinstance(record, TcpReset):
        return f"{record.component} tcp_{'send' if record.direction == 'sent' else 'receive'}_reset"
    if isinstance(record, TcpRetransmit):
        return f"{record.component} retransmit"
    return f"{record.component} {record.event}"


def is_child(record: Record) -> bool:
    """A full socket the listener made at the handshake's ACK, born in
    SYN_RECV (the tracepoint says ``LISTEN → SYN_RECV``).  The connection was
    in SYN_RECV before, as a request socket, since the SYN: so as the
    connection's entry into SYN_RECV this record gives only a latest time."""
    return (
        isinstance(record, TcpState)
        and record.old == "LISTEN"
        and record.new == "SYN_RECV"
        and not record.is_listener
    )


def earliest(record: Record) -> float:
    """The earliest time the fact can have happened."""
    if isinstance(record, TcpState):
        if record.source == "trace" and not is_child(record):
            return record.ts
        return record.seen_after if record.seen_after is not None else -math.inf
    return record.ts


def latest(record: Record) -> float:
    """The latest time the fact can have happened.  A hand-over whose
    minisock was found in a later state than the full socket's last
    (``handed_seen``) reached that state by the lookup, not at the
    tracepoint: the orphan's FIN_WAIT2 minisock may have met the FIN between."""
    if isinstance(record, App) and record.returned_ts is not None:
        return record.returned_ts
    if isinstance(record, TcpState) and record.handed_seen is not None:
        return max(record.ts, record.handed_seen)
    return record.ts


def exact(record: Record) -> bool:
    """Whether the record's ``ts`` is the fact's own time (not a poll's)."""
    if isinstance(record, TcpState):
        return record.source == "trace" and not is_child(record)
    return True


# --- checking ---------------------------------------------------------------------


def check(records: Sequence[Record]) -> list[Violation]:
    """The pairs whose cause cannot have come before their effect."""
    out = []
    for link in links(records):
        gap = earliest(link.cause) - latest(link.effect)
        if gap > 0:
            out.append(Violation(link, gap * 1000))
    return out


# --- ordering for a picture -----------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Placed:
    """A record where a picture should put it: ``at`` (a time, for sorting);
    ``moved`` when that is not the record's own time (a polled line drawn
    before what it caused)."""

    record: Record
    at: float
    moved: bool


def position(record: Record) -> float:
    """A record's own place on the time line."""
    if isinstance(record, Segment):
        return record.shown_at
    return record.ts


def order(records: Sequence[Record]) -> list[Placed]:
    """``records`` in the order a ladder should draw them: by time, except
    that a record whose time is not exact (a poll's) is moved up to just
    before the first record it caused, when it would otherwise come after
    it.  Exact records never move."""
    at = {id(r): position(r) for r in records}
    for link in links(records):
        cause, effect = link.cause, link.effect
        if exact(cause):
            continue
        limit = at[id(effect)]
        if at[id(cause)] >= limit:
            at[id(cause)] = max(earliest(cause), math.nextafter(limit, -math.inf))
    # each side's states of one connection stay in the order they were
    # logged: a state moved up pulls the polled ones before it along, and
    # what follows it never comes before it
    sequences: dict[tuple[str, str], list[TcpState]] = {}
    for r in records:
        if isinstance(r, TcpState):
            sequences.setdefault((r.component, r.conn), []).append(r)
    for seq in sequences.values():
        for before, after in zip(reversed(seq[:-1]), reversed(seq[1:]), strict=True):
            if not exact(before) and at[id(before)] > at[id(after)]:
                at[id(before)] = max(earliest(before), at[id(after)])
        for before, after in itertools.pairwise(seq):
            if at[id(after)] < at[id(before)]:
                at[id(after)] = at[id(before)]
    indexed = sorted(enumerate(records), key=lambda ir: (at[id(ir[1])], ir[0]))
    return [Placed(r, at[id(r)], at[id(r)] != position(r)) for _i, r in indexed]
