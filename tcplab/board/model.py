"""What the board shows, as plain messages (pure: placed records in,
JSON-ready dicts out, no clock read).

The page is a stack of ladder rows, each drawn by
:func:`tcplab.timeline.svg_row` from the rows of
:mod:`tcplab.ladder_layout` — the terminal ladder's rows, in both languages
at once so the page can switch without asking again.  Beside the ladder: each
side's sockets now (state, timer, what is left of TIME_WAIT), the scenario
being run and its explanation, and what the middlebox's rules did.  What a
person reads about the run — its title, explanation and failures — is sent
the same way, by language (``{"en": …, "zh": …}``); a run reported by
records from outside (compose's client) has only English.

A page that opens late asks for :meth:`BoardModel.replay`: the same messages
it would have had, limited to the newest :data:`KEPT_ROWS` rows (older ones
are counted, not kept: a run of thousands of connections must not grow the
page or this process without bound).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from core.events import (
    CLOSED,
    ObserverStop,
    Record,
    RulesChanged,
    RunDone,
    ScenarioStart,
    TcpState,
)
from tcplab import causality, connview, timeline
from tcplab.ladder_layout import Layout, Row

LANGS = ("en", "zh")
KEPT_ROWS = 600
"""Rows a page keeps (and a late page is sent): enough for a few dozen
connections, few enough that the page stays quick at thousands."""
MAX_SOCKETS = 200
"""Sockets listed per side; beyond that the table says how many more."""
TCP_TIMEWAIT_LEN_S = 60.0
"""include/net/tcp.h ``TCP_TIMEWAIT_LEN``: how long Linux keeps TIME_WAIT."""


Message = dict[str, Any]
ByLang = Mapping[str, Any]
"""Language → what is said in it (``en`` always; ``zh`` where known)."""


@dataclasses.dataclass(slots=True)
class Sock:
    """One socket on one side, as the page lists it."""

    conn: str
    state: str
    since: float
    timer: str = "off"
    expires_at: float | None = None
    """Wall time its timer fires (TIME_WAIT: when the kernel drops it)."""

    def as_message(self) -> Message:
        return {
            "conn": self.conn,
            "state": self.state,
            "since": self.since,
            "timer": self.timer,
            "expires_at": self.expires_at,
        }


_REPLACED = ("sockets", "summary")
"""Messages that a later one of the same type (and side) replaces."""


def coalesce(batch: list[Any]) -> list[Any]:
    """A batch without the side tables and counts that a later one in it
    replaces."""

    def key(message: Any) -> tuple[Any, Any] | None:
        if isinstance(message, dict) and message.get("type") in _REPLACED:
            return message.get("type"), message.get("side")
        return None

    last = {key(m): i for i, m in enumerate(batch)}
    return [m for i, m in enumerate(batch) if key(m) is None or last[key(m)] == i]


def shed(batch: list[Any], keep_rows: int = KEPT_ROWS) -> tuple[list[Any], int]:
    """``batch`` coalesced, with only its newest ``keep_rows`` rows (a page
    keeps no more: older ones would only be folded there); and how many rows
    went.  Everything else is kept: run, dividers, rules, the last tables."""
    kept = coalesce(batch)
    extra = sum(1 for m in kept if _is_row(m)) - keep_rows
    if extra <= 0:
        return kept, 0
    out = []
    gone = 0
    for message in kept:
        if gone < extra and _is_row(message):
            gone += 1
            continue
        out.append(message)
    return out, gone


def _is_row(message: Any) -> bool:
    return isinstance(message, dict) and message.get("type") == "row"


def row_message(number: int, rows: dict[str, Row]) -> Message:
    """One ladder row, drawn in every language."""
    first = rows["en"]
    return {
        "type": "row",
        "n": number,
        "kind": first.kind,
        "style": first.style,
        "conn": first.conn,
        "side": first.side,
        "at_ms": round(first.at_ms, 3),
        "svg": {lang: timeline.svg_row(row) for lang, row in rows.items()},
    }


class BoardModel:
    """Placed records → messages for the page, and what a late page needs."""

    def __init__(self, kept_rows: int = KEPT_ROWS) -> None:
        self.kept_rows = kept_rows
        self._layouts = {lang: Layout(None, lang) for lang in LANGS}
        self._rows: collections.deque[Message] = collections.deque(maxlen=kept_rows)
        self.rows_total = 0
        self.conns: set[str] = set()
        self._conns_seen = 0
        self.sockets: dict[str, dict[str, Sock]] = {"client": {}, "server": {}}
        self.run: Message = {"type": "run", "scenario": None, "status": "idle"}
        self.rule_events: collections.deque[Message] = collections.deque(maxlen=50)
        self._waiting: list[causality.Placed] = []
        self._changed: set[str] = set()

    # --- runs ----------------------------------------------------------------

    def new_run(self, scenario: str | None, title: ByLang, teaches: ByLang) -> list[Message]:
        """A new run begins: a fresh time zero, the sockets of the last one
        forgotten (they were in namespaces that are gone or reused).
        ``title`` and ``teaches`` by language."""
        self._layouts = {lang: Layout(None, lang) for lang in LANGS}
        self._waiting = []
        for side in self.sockets.values():
            side.clear()
        self._changed.clear()
        self.run = {
            "type": "run",
            "scenario": scenario,
            "title": dict(title),
            "teaches": dict(teaches),
            "status": "running",
            "failures": {lang: [] for lang in title},
        }
        divider = {
            "type": "divider",
            "n": self.rows_total,
            "scenario": scenario,
            "title": dict(title),
        }
        self._keep(divider)
        return [self.run, divider, *self._sockets_messages()]

    def run_done(self, failures: Mapping[str, Sequence[str]]) -> list[Message]:
        """The run is over: ``failures`` by language (empty lists: it passed)."""
        out = self._release(flush=True) + self.sockets_changed()
        failed = {lang: list(said) for lang, said in failures.items()}
        status = "failed" if any(failed.values()) else "passed"
        self.run = {**self.run, "status": status, "failures": failed}
        return [*out, self.run]

    # --- records ---------------------------------------------------------------

    def feed(self, placed: causality.Placed) -> list[Message]:
        """One record, in causal order: the rows it draws, and what the
        middlebox's rules did.  A socket it changes is not sent at once (a
        burst changes each side's table thousands of times a second): see
        :meth:`sockets_changed`."""
        record = placed.record
        out: list[Message] = []
        if isinstance(record, ScenarioStart):
            out += self.new_run(record.scenario, {"en": record.title or ""}, {})
        elif isinstance(record, RunDone) and record.scenario == self.run.get("scenario"):
            out += self.run_done({"en": [*record.failures, *record.violations]})
        elif isinstance(record, RulesChanged):
            message = {
                "type": "rules_changed",
                "ts": record.ts,
                "op": record.op,
                "rule": record.rule,
                "frames": record.frames,
                "value": record.value,
            }
            self.rule_events.append(message)
            out.append(message)
        self._sockets_from(record)
        out += self._ladder(placed)
        return out

    def _ladder(self, placed: causality.Placed) -> list[Message]:
        layout = self._layouts["en"]
        if layout.t0 is None:
            if not connview.is_time_zero(placed.record):
                # rows wait for the first SYN (their times count from it),
                # as the terminal ladder's do; bounded like the page
                self._waiting.append(placed)
                if len(self._waiting) > self.kept_rows:
                    return self._release(flush=True)
                return []
            for each in self._layouts.values():
                each.t0 = placed.record.ts
        return self._release() + self._rows_of(placed)

    def _release(self, flush: bool = False) -> list[Message]:
        if not self._waiting:
            return []
        if flush and self._layouts["en"].t0 is None:
            t0 = connview.time_zero([p.record for p in self._waiting])
            for each in self._layouts.values():
                each.t0 = t0
        waiting, self._waiting = self._waiting, []
        out: list[Message] = []
        for placed in waiting:
            out += self._rows_of(placed)
        return out

    def _rows_of(self, placed: causality.Placed) -> list[Message]:
        by_lang = {lang: layout.feed(placed) for lang, layout in self._layouts.items()}
        out = []
        for i, first in enumerate(by_lang["en"]):
            if first.conn is not None and first.conn not in self.conns:
                self.conns.add(first.conn)
                self._conns_seen += 1
                if len(self.conns) > self.kept_rows:
                    self.conns = set()  # only a count matters once it is this large
            message = row_message(
                self.rows_total, {lang: rows[i] for lang, rows in by_lang.items()}
            )
            self._keep(message)
            out.append(message)
        return out

    def _keep(self, message: Message) -> None:
        self._rows.append(message)
        self.rows_total += 1

    # --- sockets -------------------------------------------------------------------

    def sockets_changed(self) -> list[Message]:
        """The tables of the sides whose sockets changed since the last call
        (the board sends them a few times a second, not once per change)."""
        changed = [self._side_message(side) for side in self.sockets if side in self._changed]
        self._changed.clear()
        return changed

    def _sockets_from(self, record: Record) -> None:
        side = record.component
        if side not in self.sockets:
            return
        table = self.sockets[side]
        if isinstance(record, TcpState):
            if (record.is_listener and record.new == CLOSED) or (
                record.new == CLOSED and record.handed_to is None
            ):
                table.pop(record.conn, None)
            else:
                state = record.shown_new if record.handed_to is not None else record.new
                table[record.conn] = Sock(record.conn, state, record.ts, *_timer(record))
                if len(table) > MAX_SOCKETS * 4:
                    # a page lists MAX_SOCKETS; keep the newest few times that
                    for conn in list(table)[: len(table) - MAX_SOCKETS]:
                        del table[conn]
            self._changed.add(side)
            return
        if isinstance(record, ObserverStop):
            for sock in record.remaining:
                name, left_in = sock.get("conn"), sock.get("state")
                if not isinstance(name, str) or not isinstance(left_in, str):
                    continue
                known = table.get(name)
                expires = sock.get("expires_ms")
                table[name] = Sock(
                    name,
                    left_in,
                    known.since if known and known.state == left_in else record.ts,
                    str(sock.get("timer", "off")),
                    record.ts + expires / 1000 if isinstance(expires, int | float) else None,
                )
            self._changed.add(side)

    def _side_message(self, side: str) -> Message:
        socks = list(self.sockets[side].values())
        shown = socks[-MAX_SOCKETS:]
        return {
            "type": "sockets",
            "side": side,
            "sockets": [s.as_message() for s in shown],
            "more": len(socks) - len(shown),
        }

    def _sockets_messages(self) -> list[Message]:
        return [self._side_message(side) for side in self.sockets]

    # --- a page opening late --------------------------------------------------------

    def replay(self) -> list[Message]:
        """Everything a page needs to show what has happened so far."""
        folded = self.rows_total - len(self._rows)
        return [
            {
                "type": "hello",
                "rows_total": self.rows_total,
                "rows_folded": folded,
                "kept_rows": self.kept_rows,
                "connections": self._conns_seen,
            },
            self.run,
            *self._rows,
            *self._sockets_messages(),
            *self.rule_events,
        ]

    def summary(self) -> Message:
        return {
            "type": "summary",
            "rows_total": self.rows_total,
            "rows_folded": self.rows_total - len(self._rows),
            "connections": self._conns_seen,
        }


def _timer(record: TcpState) -> tuple[str, float | None]:
    """The timer a state change leaves running, as a wall-clock deadline."""
    if record.expires_ms is not None and record.timer != "off":
        return record.timer, record.ts + record.expires_ms / 1000
    new = record.shown_new if record.handed_to is not None else record.new
    if new == "TIME_WAIT":
        # entered just now (a tracepoint's time): the whole of it is left
        return "timewait", record.ts + TCP_TIMEWAIT_LEN_S
    return record.timer, None
