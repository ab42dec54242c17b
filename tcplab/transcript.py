"""A readable transcript of merged event lines (pure).

The runner gathers JSON event lines from every component; this turns each
one into one line of text a person can follow, with times relative to the
start of the run::

    +   0.000 ms  server   LISTEN                     198.51.100.1:7007
    +  12.418 ms  client   CLOSED → SYN_SENT (inferred) 192.0.2.1:40312-198.51.100.1:7007

and keeps a small reorder window so records from several processes come out
in causal order (:func:`tcplab.causality.order`) even though their pipes
deliver them a little apart and a poll reports a state after the fact.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from core.events import (
    App,
    DaemonDone,
    DaemonReady,
    ObserverStop,
    Record,
    Segment,
    TcpReset,
    TcpRetransmit,
    TcpState,
    to_fields,
)
from tcplab import causality

REORDER_WINDOW_S = 0.15
"""Hold a record this long before printing it, so a record from another
process with an earlier ``ts`` can still overtake it."""

_COMPONENT_WIDTH = 7


def describe(record: Record) -> str:
    """The text of one record, without time or component."""
    if isinstance(record, TcpState):
        text = f"{record.old} → {record.shown_new}"
        notes: list[str] = [record.source]
        if record.handed_to:
            if record.shown_new == record.old:
                text = f"{record.old}, now in a {record.handed_to} minisock"
            notes.append(f"the full socket: {record.old} → {record.new}")
        if record.in_old_ms is not None:
            notes.append(f"after {record.in_old_ms:.1f} ms in {record.old}")
        if record.shown_new == "TIME_WAIT" and record.expires_ms is not None:
            notes.append(f"timer {record.expires_ms / 1000:.1f} s")
        if record.retrans:
            notes.append(f"retrans {record.retrans}")
        text += f"  ({', '.join(notes)})"
        return f"{text:<58} {record.conn}".rstrip()
    if isinstance(record, Segment):
        arrow = "→" if record.dir == "c2s" else "←"
        text = f"{arrow} {record.flags:<4} seq={record.rseq} ack={record.rack} len={record.len}"
        roles = [t for t in record.tags if t not in ("data", "ack")]
        if roles:
            text += "  " + " ".join(roles)
        if record.verdict != "pass" or record.delay_ms:
            text += f"  [{record.verdict.upper()}"
            if record.kept_ms is not None:
                text += f" after {record.kept_ms:g} ms"
            elif record.delay_ms:
                text += f" {record.delay_ms:g} ms"
            if record.rule:
                text += f" by {record.rule}"
            text += "]"
        return f"{text:<58} {record.conn}".rstrip()
    if isinstance(record, App):
        parts = [f"{record.kind.removeprefix('app_')}()"]
        for name in ("bytes", "how", "op", "local", "detail"):
            value = getattr(record, name)
            if value not in (None, ""):
                parts.append(f"{name}={value}")
        if record.eof:
            parts.append("EOF (peer's FIN)")
        return f"{' '.join(parts):<58} {record.conn or ''}".rstrip()
    if isinstance(record, TcpRetransmit):
        what = "SYN-ACK" if record.synack else f"from {record.state}"
        return f"{'kernel retransmits ' + what:<58} {record.conn}"
    if isinstance(record, TcpReset):
        verb = "sends" if record.direction == "sent" else "receives"
        why = f" ({record.reason})" if record.reason else ""
        return f"{f'kernel {verb} RST{why}':<58} {record.conn}"
    if isinstance(record, ObserverStop):
        if not record.remaining:
            return "observer: all sockets gone"
        bits = []
        for sock in record.remaining:
            bit = f"{sock.get('state')}"
            if sock.get("state") == "TIME_WAIT" and sock.get("expires_ms") is not None:
                bit += f" with {sock['expires_ms'] / 1000:.1f} s left"
            bits.append(f"{bit} ({sock.get('conn')})")
        return f"observer stopped ({record.reason}): " + "; ".join(bits)
    if isinstance(record, DaemonReady) and record.component == "proxy":
        rules = ", ".join(f"{r['action']} {r['rule']}" for r in record.rules or ())
        pace = f"; pace {record.pace_ms:g} ms" if record.pace_ms else ""
        return f"proxy forwarding; rules: {rules or 'none'}{pace}"
    if isinstance(record, DaemonDone) and record.component == "proxy":
        counters = record.counters or {}
        shown = ", ".join(f"{k}={v}" for k, v in counters.items() if v)
        return f"proxy stopped ({record.status}): {shown or 'nothing seen'}"
    fields = to_fields(record)
    extras = {
        k: v
        for k, v in fields.items()
        if k not in ("ts", "event", "component", "level", "conn", "logged_ts")
    }
    tail = " ".join(f"{k}={v}" for k, v in extras.items())
    return f"{record.event} {tail}".rstrip()


def format_line(placed: causality.Placed, t0: float) -> str:
    record = placed.record
    at = placed.at if placed.moved else causality.position(record)
    bound = "≤" if placed.moved else "+"
    return (
        f"{bound}{(at - t0) * 1000:10.3f} ms  {record.component:<{_COMPONENT_WIDTH}} "
        f"{describe(record)}"
    )


def transcript(records: Sequence[Record]) -> list[str]:
    """The whole transcript of a finished run, in causal order."""
    placed = causality.order(records)
    if not placed:
        return []
    t0 = min(r.ts for r in records)
    return [format_line(p, t0) for p in placed]


class Merger:
    """Merges records from several streams with a small window.

    ``push(record)`` then ``pop_ready(now)`` returns the records whose place
    (:func:`tcplab.causality.order`, among the records still held) is older
    than ``now - window``, in that order; ``drain()`` the rest.
    """

    def __init__(self, window: float = REORDER_WINDOW_S) -> None:
        self.window = window
        self._pending: list[Record] = []
        self._due = math.inf
        """Nothing held is ready before this (wall time)."""

    def push(self, record: Record) -> None:
        self._pending.append(record)
        # a record is only ever moved earlier, to just before what it
        # caused: none can be ready before its own place's window has passed
        self._due = min(self._due, causality.position(record) + self.window)

    def next_due(self) -> float | None:
        """When :meth:`pop_ready` can next return something (``None``:
        nothing is held): the earliest place held (a paced segment's is when
        it left, later than its ``ts``) plus the window, or, once ordered,
        the first record's place in that order plus the window."""
        return self._due if self._pending else None

    def pop_ready(self, now: float) -> list[causality.Placed]:
        if not self._pending or now < self._due:
            return []
        placed = causality.order(self._pending)
        ready = []
        for p in placed:
            if p.at > now - self.window:
                break
            ready.append(p)
        if ready:
            gone = {id(p.record) for p in ready}
            self._pending = [r for r in self._pending if id(r) not in gone]
        rest = placed[len(ready) :]
        self._due = rest[0].at + self.window if rest else math.inf
        return ready

    def drain(self) -> list[causality.Placed]:
        placed = causality.order(self._pending)
        self._pending = []
        self._due = math.inf
        return placed
