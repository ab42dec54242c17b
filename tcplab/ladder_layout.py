"""The ladder diagram's layout (pure): a run's records, placed in causal
order, become rows — plain data, so that every renderer draws the same
picture.

Three lifelines — client, middlebox, server.  Each ``segment`` record is an
arrow from its sender to the middlebox and, when it went on, from the
middlebox to the receiver; a dropped segment ends in ✗ at the middlebox, a
delayed or held one says so there and its second leg is drawn when it
leaves.  Each ``tcp_state`` record is written on its side's lifeline with
the time spent in the previous state and where it came from: ``[t]`` the
kernel's tracepoint, ``[p]`` a sock_diag poll, ``[i]`` implied by the TCP
state machine.  What the programs asked of their sockets (``connect()``,
``close()``…) is written the same way.  Times are milliseconds from the
first SYN (:func:`tcplab.connview.time_zero`).

The order is causal (:func:`tcplab.causality.order`): a polled state change
that was seen only after the segment it caused is drawn before that
segment, its time marked ``≤`` (it happened by then).  Records that do not
change what a person sees of the connection are folded away: a child socket
born from the listener in the SYN_RECV its request socket was already in,
and the sock_diag echo of a hand-over to a timewait minisock (drawn once,
at the tracepoint's time).

:class:`Layout` turns placed records into :class:`Row` s, one call per
record, so the terminal (``tcplab run``), the HTML export and the board all
draw the same rows; the words they use are in :data:`LABELS`.  Drawing them
is :mod:`tcplab.timeline`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

from core import netstat
from core.events import (
    APP_ACCEPT,
    APP_CLOSE,
    APP_CONNECT,
    APP_ERROR,
    APP_SHUTDOWN,
    App,
    ObserverStop,
    Record,
    Segment,
    TcpReset,
    TcpRetransmit,
    TcpState,
)
from tcplab import causality, connview

SHOWN_APP = {
    APP_CONNECT: "connect()",
    APP_ACCEPT: "accept()",
    APP_CLOSE: "close()",
    APP_SHUTDOWN: "shutdown()",
    APP_ERROR: "error",
}
SOURCE_MARK = {"trace": "[t]", "poll": "[p]", "inferred": "[i]"}

LABELS = {
    "en": {
        "time": "t (ms)",
        "client": "client",
        "middlebox": "middlebox",
        "server": "server",
        "legend": "[t] kernel tracepoint  [p] sock_diag poll  [i] implied  "
        "≤ polled: happened by then",
        "still": "still: ",
        "counters": "nstat: ",
        "left": "left",
        "more": "more",
        "released": "▶released",
        "after": "▶after",
        "retransmit": "retransmit",
        "rst_sent": "sends RST",
        "rst_received": "gets RST",
        "failures": "Expectations not met",
        "timer": "timer",
    },
    "zh": {
        "time": "时间(毫秒)",
        "client": "客户端",
        "middlebox": "中间盒",
        "server": "服务端",
        "legend": "[t] 内核跟踪点  [p] sock_diag 轮询  [i] 由状态机推出  ≤ 轮询所见:不晚于此刻",
        "still": "仍在：",
        "counters": "nstat：",
        "left": "剩余",
        "more": "个",
        "released": "▶放行",
        "after": "▶延后",
        "retransmit": "重传",
        "rst_sent": "发出 RST",
        "rst_received": "收到 RST",
        "failures": "未满足的预期",
        "timer": "计时器",
    },
}


def labels(lang: str) -> dict[str, str]:
    return LABELS.get(lang, LABELS["en"])


# --- rows ----------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One line of the diagram, for any renderer.

    ``kind``: ``segment`` (an arrow), ``note`` (text on a lifeline).
    ``at_ms``: milliseconds from time zero; ``bound``: the time is an upper
    bound (a polled line drawn where its cause puts it)."""

    kind: Literal["segment", "note"]
    at_ms: float
    bound: bool = False
    side: Literal["client", "server"] | None = None
    text: str = ""
    style: str = ""
    """note: ``state``, ``app``, ``kernel``, ``still``; segment: its verdict."""
    direction: Literal["c2s", "s2c"] | None = None
    label: str = ""
    note: str = ""
    first_leg: bool = True
    second_leg: bool = True
    conn: str | None = None

    def time_text(self) -> str:
        return f"{'≤' if self.bound else ''}{self.at_ms:+.1f}"


def segment_label(seg: Segment) -> str:
    """``SA 0:1`` — flags, relative seq:ack, length if any, roles."""
    text = f"{seg.flags} {seg.rseq}:{seg.rack}"
    if seg.len:
        text += f" len={seg.len}"
    roles = [t for t in seg.tags if t not in ("data", "ack")]
    if roles:
        text += " " + ",".join(roles)
    return text


def verdict_note(seg: Segment, lang: str = "en") -> str:
    words = labels(lang)
    verdict = seg.verdict
    if verdict == "pass":
        return f"⧗{seg.delay_ms:g}ms" if seg.delay_ms else ""
    if verdict == "delay":
        return f"⧗{seg.delay_ms or 0:g}ms"
    if verdict == "release":
        if seg.delay_ms is None:  # held until someone let it go
            return words["released"]
        kept = seg.kept_ms if seg.kept_ms is not None else seg.delay_ms
        return f"{words['after']} {kept:.0f}ms"
    return {"drop": "✗", "hold": "⏸held", "duplicate": "×2", "reset": "✗RST",
            "inject": "RST"}.get(verdict, verdict)  # fmt: skip


class Layout:
    """Placed records → rows, one record at a time (the live terminal and
    the board feed it as records arrive; a finished run all at once)."""

    def __init__(self, t0: float | None = None, lang: str = "en") -> None:
        self.t0 = t0
        self.lang = lang
        self._first: float | None = None
        self._shown: dict[tuple[str, str], str] = {}
        """The state each side's connection is drawn in (for folding)."""

    def _ms(self, ts: float) -> float:
        if self._first is None:
            self._first = ts
        base = self.t0 if self.t0 is not None else self._first
        return (ts - base) * 1000

    def feed(self, placed: causality.Placed) -> list[Row]:
        record = placed.record
        if isinstance(record, Segment):
            if self.t0 is None and connview.is_time_zero(record):
                self.t0 = record.ts
            return [self._segment(record)]
        at = self._ms(placed.at if placed.moved else causality.position(record))
        if isinstance(record, TcpState):
            return self._state(record, at, placed.moved)
        if isinstance(record, App) and record.component in ("client", "server"):
            if record.kind not in SHOWN_APP or record.how == "listener":
                return []
            text = SHOWN_APP[record.kind]
            if record.kind == APP_ERROR:
                text = f"error {record.how}"
            elif record.kind == APP_CLOSE and record.how not in (None, "close"):
                text = f"close() {record.how}"
            return [self._note(record.component, f"· {text}", at, "app")]
        if isinstance(record, TcpRetransmit) and record.component in ("client", "server"):
            words = labels(self.lang)
            what = "SYN-ACK" if record.synack else record.state
            return [self._note(record.component, f"↻ {words['retransmit']} ({what})", at, "kernel")]
        if isinstance(record, TcpReset) and record.component in ("client", "server"):
            words = labels(self.lang)
            word = words["rst_sent"] if record.direction == "sent" else words["rst_received"]
            reason = f" {record.reason}" if record.reason and record.direction == "sent" else ""
            return [self._note(record.component, f"⚡ {word}{reason}", at, "kernel")]
        if isinstance(record, ObserverStop) and record.component in ("client", "server"):
            return self._still(record, at)
        return []

    def _state(self, record: TcpState, at: float, moved: bool) -> list[Row]:
        if record.component not in ("client", "server") or record.is_listener:
            return []
        key = (record.component, record.conn)
        current = self._shown.get(key, "CLOSED")
        if record.handed_to is not None:
            if record.shown_new == current:
                return []  # an orphan's FIN_WAIT2 moves into a minisock: same state
            new = record.shown_new
        elif connview.is_folded(record, current):
            return []
        else:
            new = record.new
        self._shown[key] = new
        text = f"{record.old} → {new}"
        notes = []
        if record.in_old_ms is not None:
            notes.append(f"{record.in_old_ms:.0f}ms")
        if new == "TIME_WAIT" and record.expires_ms:
            notes.append(f"⏲{record.expires_ms / 1000:.0f}s")
        if record.retrans:
            notes.append(f"retrans {record.retrans}")
        if notes:
            text += f" ({', '.join(notes)})"
        text += f" {SOURCE_MARK[record.source]}"
        side = record.component
        assert side in ("client", "server")
        return [self._note(side, text, at, "state", bound=moved)]

    def _still(self, record: ObserverStop, at: float) -> list[Row]:
        words = labels(self.lang)
        left = [
            f"{sock.get('state')} {sock['expires_ms'] / 1000:.1f}s {words['left']}"
            if sock.get("state") == "TIME_WAIT" and sock.get("expires_ms") is not None
            else str(sock.get("state"))
            for sock in record.remaining
        ]
        out = []
        if left:
            more = f" (+{len(left) - 1} {words['more']})" if len(left) > 1 else ""
            out.append(
                self._note(record.component, f"{words['still']}{left[0]}{more}", at, "still")
            )
        # the kernel's counters that moved while the side was observed, one
        # a row (nstat's names, TcpExt's without their group)
        for name, n in netstat.shown(record.counters or {}):
            text = f"{words['counters']}{name.removeprefix('TcpExt')} {n:+d}"
            out.append(self._note(record.component, text, at, "kernel"))
        return out

    def _note(self, side: str, text: str, at: float, style: str, bound: bool = False) -> Row:
        assert side in ("client", "server")
        return Row("note", at, bound, side, text, style)  # type: ignore[arg-type]

    def _segment(self, seg: Segment) -> Row:
        verdict = seg.verdict
        note = verdict_note(seg, self.lang)
        if seg.rule and verdict not in ("pass", "inject"):
            note = f"{note} {seg.rule}".strip()
        return Row(
            "segment",
            self._ms(seg.shown_at),
            style=verdict,
            direction=seg.dir,
            label=segment_label(seg),
            note=note,
            first_leg=verdict not in ("inject", "release"),
            second_leg=seg.delivered,
            conn=seg.conn,
        )


def rows(records: Sequence[Record], lang: str = "en") -> list[Row]:
    """Every row of a finished run, in causal order, times from its first SYN."""
    layout = Layout(connview.time_zero(records), lang)
    out: list[Row] = []
    for placed in causality.order(records):
        out += layout.feed(placed)
    return out
