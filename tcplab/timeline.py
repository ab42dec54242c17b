"""The ladder diagram: segments, verdicts and both kernels' states in one
picture (pure: records in, rows, text or HTML out).

Three lifelines — client, middlebox, server.  Each ``segment`` record is an
arrow from its sender to the middlebox and, when it went on, from the
middlebox to the receiver; a dropped segment ends in ✗ at the middlebox, a
delayed or held one says so there and its second leg is drawn when it
leaves.  Each ``tcp_state`` record is written on its side's lifeline with
the time spent in the previous state and where it came from: ``[t]`` the
kernel's tracepoint, ``[p]`` a sock_diag poll, ``[i]`` implied by the TCP
state machine.  What the programs asked of their sockets (``connect()``,
``close()``…) is written the same way.  Times are milliseconds from the
first SYN.

The order is causal (:func:`tcplab.causality.order`): a polled state change
that was seen only after the segment it caused is drawn before that
segment, its time marked ``≤`` (it happened by then).  Records that do not
change what a person sees of the connection are folded away: a child socket
born from the listener in the SYN_RECV its request socket was already in,
and the sock_diag echo of a hand-over to a timewait minisock (drawn once,
at the tracepoint's time).

:class:`Layout` turns placed records into :class:`Row` s, one call per
record, so the terminal (``tcplab run``), the HTML export and the board all
draw the same rows; :func:`render_text` and :func:`render_html` draw them.
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Iterable, Sequence
from typing import Literal

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

WIDTH = 100
TIME_W = 10
C = TIME_W + 2  # client lifeline column
M = 56  # middlebox
S = WIDTH - 2  # server
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
        "still": "still",
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
        "still": "仍在",
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
            if self.t0 is None and "syn" in record.tags:
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
        if not left:
            return []
        more = f" (+{len(left) - 1} {words['more']})" if len(left) > 1 else ""
        return [self._note(record.component, f"{words['still']}: {left[0]}{more}", at, "still")]

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


# --- the terminal -------------------------------------------------------------


class Ladder:
    """Rows as terminal lines, at most ``width`` columns.

    Live, records come before time zero is known (the first SYN): they are
    held until it comes, or until :meth:`flush` at the end of a run that
    never had one."""

    def __init__(self, width: int = WIDTH, lang: str = "en", t0: float | None = None) -> None:
        self.width = width
        self.layout = Layout(t0, lang)
        self._waiting: list[causality.Placed] = []

    def header(self) -> list[str]:
        words = labels(self.layout.lang)
        line = list(f"   {words['time']}".ljust(self.width))
        for col, name in ((C, words["client"]), (M, words["middlebox"]), (S, words["server"])):
            start = max(TIME_W, min(col - len(name) // 2, self.width - len(name)))
            line[start : start + len(name)] = name
        return ["".join(line).rstrip(), f"   {words['legend']}", self._blank("")]

    def feed(self, placed: causality.Placed) -> list[str]:
        record = placed.record
        if self.layout.t0 is None:
            if not (isinstance(record, Segment) and "syn" in record.tags):
                self._waiting.append(placed)
                return []
            self.layout.t0 = record.ts
        out = self._release()
        return out + [self.draw(row) for row in self.layout.feed(placed)]

    def flush(self) -> list[str]:
        """What is still held (a run without a SYN: times from its first record)."""
        if self.layout.t0 is None and self._waiting:
            self.layout.t0 = min(p.record.ts for p in self._waiting)
        return self._release()

    def _release(self) -> list[str]:
        out = []
        for waiting in self._waiting:
            out += [self.draw(row) for row in self.layout.feed(waiting)]
        self._waiting = []
        return out

    def _blank(self, stamp: str) -> str:
        row = list(stamp.ljust(TIME_W).ljust(self.width))
        for col in (C, M, S):
            row[col] = "│"
        return "".join(row).rstrip()

    def draw(self, row: Row) -> str:
        stamp = f"{row.time_text():>9} "
        line = list(self._blank(stamp).ljust(self.width))
        if row.kind == "note":
            room = M - C - 3
            text = row.text[:room]
            start = C + 2 if row.side == "client" else S - 2 - len(text)
            line[start : start + len(text)] = text
            return "".join(line).rstrip()
        c2s = row.direction == "c2s"
        src, dst = (C, S) if c2s else (S, C)
        if row.first_leg:
            _arrow(line, src, M, row.label)
        if row.second_leg:
            _arrow(line, M, dst, "" if row.first_leg else row.label)
        line[M] = "┼" if row.second_leg or row.style in ("hold", "delay") else "│"
        note = row.note
        if row.style in ("drop", "reset"):
            line[M] = "✗"
            note = note.lstrip("✗")
        if note:
            # the verdict sits just past the middlebox, on the receiver's side
            note = note[: S - M - 4]
            start = M + 2 if c2s else M - 1 - len(note)
            line[start : start + len(note)] = note
        return "".join(line).rstrip()


def _arrow(row: list[str], start: int, end: int, label: str) -> None:
    """Draw ─── from ``start`` to ``end`` (either direction) with a head at
    ``end`` and ``label`` inside, near the sender."""
    step = 1 if end > start else -1
    for col in range(start + step, end, step):
        row[col] = "─"
    row[end - step] = "►" if step > 0 else "◄"
    if label:
        room = abs(end - start) - 4
        label = f" {label[: room - 2]} "
        first = start + 2 if step > 0 else start - 2 - len(label) + 1
        row[first : first + len(label)] = label


def render_text(records: Sequence[Record], width: int = WIDTH, lang: str = "en") -> list[str]:
    """The whole diagram of a finished run."""
    ladder = Ladder(width, lang, connview.time_zero(records))
    lines = ladder.header()
    for row in rows(records, lang):
        lines.append(ladder.draw(row))
    return lines


# --- HTML ----------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC",
  "PingFang SC", "Microsoft YaHei", "WenQuanYi Micro Hei", sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } .teaches { max-width: 60em; line-height: 1.5; white-space: pre-wrap; }
svg text { font-family: ui-monospace, "Noto Sans Mono CJK SC", monospace; font-size: 12px; }
.lane { stroke: #888; stroke-width: 1.5; } .lane-name { font-weight: bold; font-size: 14px; }
.seg { stroke: #1f5fa8; stroke-width: 1.5; fill: none; } .seg.s2c { stroke: #2e7d32; }
.seg.drop, .seg.reset { stroke: #c62828; } .seg.inject { stroke: #c62828; stroke-dasharray: 4 3; }
.verdict { fill: #c62828; font-weight: bold; } .state { fill: #6a1b9a; } .app { fill: #777; }
.kernel { fill: #b26a00; } .still { fill: #555; font-style: italic; } .time { fill: #999; }
.legend { fill: #777; font-size: 11px; }
"""

XS = {"client": 330, "middlebox": 650, "server": 970}
SVG_WIDTH = 1300


def render_html(
    records: Sequence[Record],
    *,
    title: str = "tcplab",
    explanation: str = "",
    failures: Iterable[str] = (),
    lang: str = "en",
) -> str:
    """One self-contained HTML page with the ladder as inline SVG."""
    words = labels(lang)
    row_h = 22
    y = 80
    parts: list[str] = []
    for row in rows(records, lang):
        parts.append(_svg_row(row, y))
        y += row_h
    height = y + 20
    lanes = "".join(
        f'<line class="lane" x1="{x}" y1="60" x2="{x}" y2="{height - 10}"/>'
        f'<text class="lane-name" x="{x}" y="30" text-anchor="middle">{words[name]}</text>'
        for name, x in XS.items()
    )
    legend = f'<text class="legend" x="10" y="50">{html.escape(words["legend"])}</text>'
    defs = (
        '<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="context-stroke"/></marker></defs>'
    )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH}" height="{height}" '
        f'viewBox="0 0 {SVG_WIDTH} {height}">{defs}{lanes}{legend}{"".join(parts)}</svg>'
    )
    failed = "".join(f"<li>{html.escape(f)}</li>" for f in failures)
    failed_html = f"<h2>{words['failures']}</h2><ul>{failed}</ul>" if failed else ""
    return (
        f'<!DOCTYPE html>\n<html lang="{"zh-Hans" if lang == "zh" else "en"}"><head>'
        f'<meta charset="utf-8"><title>{html.escape(title)}</title><style>{_CSS}</style>'
        f"</head><body><h1>{html.escape(title)}</h1>{svg}{failed_html}"
        f'<div class="teaches">{html.escape(explanation)}</div></body></html>\n'
    )


def _svg_row(row: Row, y: int) -> str:
    out = [f'<text class="time" x="10" y="{y + 4}">{html.escape(row.time_text())} ms</text>']
    if row.kind == "note":
        x = XS["client"] - 8 if row.side == "client" else XS["server"] + 8
        anchor = "end" if row.side == "client" else "start"
        out.append(
            f'<text class="{row.style}" x="{x}" y="{y + 4}" text-anchor="{anchor}">'
            f"{html.escape(row.text)}</text>"
        )
        return "".join(out)
    c2s = row.direction == "c2s"
    src = XS["client"] if c2s else XS["server"]
    dst = XS["server"] if c2s else XS["client"]
    mid = XS["middlebox"]
    cls = f"seg {'c2s' if c2s else 's2c'} {row.style}"
    x1 = src if row.first_leg else mid
    x2 = dst if row.second_leg else mid
    head = ' marker-end="url(#head)"' if row.second_leg else ""
    out.append(f'<line class="{cls}" x1="{x1}" y1="{y}" x2="{x2}" y2="{y}"{head}/>')
    anchor_x = (src + mid) // 2 if row.first_leg else (mid + dst) // 2
    out.append(
        f'<text x="{anchor_x}" y="{y - 4}" text-anchor="middle">{html.escape(row.label)}</text>'
    )
    if row.note:
        out.append(
            f'<text class="verdict" x="{mid + (8 if c2s else -8)}" y="{y + 12}" '
            f'text-anchor="{"start" if c2s else "end"}">{html.escape(row.note)}</text>'
        )
    return "".join(out)
