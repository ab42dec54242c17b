"""The ladder diagram drawn: terminal lines (``tcplab run``) and a
self-contained HTML page (pure: records in, text out).

Both draw the rows of :mod:`tcplab.ladder_layout`, so they show the same
picture; here is only where each row goes on the screen or the page.
:class:`Ladder` draws as records arrive (it also finds time zero as they
do); :func:`render_text` and :func:`render_html` draw a finished run.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

from core.events import Record
from tcplab import causality, connview
from tcplab.ladder_layout import Layout, Row, labels, rows

WIDTH = 100
TIME_W = 10
C = TIME_W + 2  # client lifeline column
M = 56  # middlebox
S = WIDTH - 2  # server


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
            if not connview.is_time_zero(record):
                self._waiting.append(placed)
                return []
            self.layout.t0 = record.ts
        out = self._release()
        return out + [self.draw(row) for row in self.layout.feed(placed)]

    def flush(self) -> list[str]:
        """What is still held (a run without a SYN: times from its first record)."""
        if self.layout.t0 is None and self._waiting:
            self.layout.t0 = connview.time_zero([p.record for p in self._waiting])
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
