"""The ladder diagram drawn: terminal lines (``tcplab run``) and a
self-contained HTML page (pure: records in, text out).

Both draw the rows of :mod:`tcplab.ladder_layout`, so they show the same
picture; here is only where each row goes on the screen or the page.
:class:`Ladder` draws as records arrive (it also finds time zero as they
do); :func:`render_text` and :func:`render_html` draw a finished run.

The SVG is built from parts a live page can share: :func:`svg_lanes` (what
is behind the rows), :func:`svg_row` (one row, in its own coordinates) and
:data:`PAGE_CSS`, on one geometry (:data:`BANDS`) in which no text can be
clipped or overlap another.
"""

from __future__ import annotations

import html
import unicodedata
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
        for col, word in ((C, words["client"]), (M, words["middlebox"]), (S, words["server"])):
            name = cells(word, self.width)
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
            text = cells(row.text, room)
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
            shown = cells(note, S - M - 4)
            start = M + 2 if c2s else M - 1 - len(shown)
            line[start : start + len(shown)] = shown
        return "".join(line).rstrip()


def cells(text: str, room: int) -> list[str]:
    """``text`` as terminal cells, at most ``room``: a wide character (CJK)
    fills two, the second left empty, so the columns after it stay where
    they are."""
    out: list[str] = []
    for char in text:
        wide = unicodedata.east_asian_width(char) in ("W", "F")
        if len(out) + (2 if wide else 1) > room:
            break
        out += [char, ""] if wide else [char]
    return out


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


# --- SVG: one geometry for the HTML page and any live page ------------------------
#
# Each kind of text has its own horizontal band, so none can overlap another
# or leave the picture: the time column, the client's notes (left of its
# lifeline), the two halves between the lifelines (a segment's label above
# its arrow on one half, the middlebox's verdict below it on the other) and
# the server's notes (right of its lifeline).  A text too long for its band
# is cut with "…" and keeps its whole self in a <title> (shown on hover).

FONT_PX = 13
"""Size of the diagram's text, before the SVG is scaled to the window."""
LANE_FONT_PX = 14
"""Size of the lifelines' names (bold)."""
ROW_H = 42
"""Height of a row: a label above the arrow, the verdict below it, and air
between that verdict and the next row's label."""
ARROW_Y = 18
"""Where in its row a segment's arrow runs."""
LABEL_Y = ARROW_Y - 5
"""Baseline of a segment's label (above the arrow)."""
VERDICT_Y = ARROW_Y + 14
"""Baseline of the middlebox's verdict (below the arrow)."""
NOTE_Y = ARROW_Y + 5
"""Baseline of the time and of a note (level with the arrow)."""
PAD = 12
"""Between a lifeline (or the time column) and the text beside it."""
TIME_X = 8
TIME_PX = 80
"""The time column, right-aligned from ``TIME_X`` to ``TIME_X + TIME_PX``."""
NOTE_PX = 352
"""Room for one side's notes ("SYN_RECV → ESTABLISHED (12ms, retrans 2) [p]")."""
HALF_PX = 330
"""From a lifeline to the middlebox: a label or a verdict of ~39 characters."""
CLIENT_X = TIME_X + TIME_PX + PAD + NOTE_PX + PAD
MIDDLEBOX_X = CLIENT_X + HALF_PX
SERVER_X = MIDDLEBOX_X + HALF_PX
SVG_WIDTH = SERVER_X + PAD + NOTE_PX + TIME_X
HEADER_H = 64
"""Above the first row: the lifelines' names and the legend."""
LANES = {"client": CLIENT_X, "middlebox": MIDDLEBOX_X, "server": SERVER_X}

BANDS: dict[str, tuple[int, int]] = {
    "time": (TIME_X, TIME_X + TIME_PX),
    "client": (CLIENT_X - PAD - NOTE_PX, CLIENT_X - PAD),
    "left": (CLIENT_X + PAD, MIDDLEBOX_X - PAD),
    "right": (MIDDLEBOX_X + PAD, SERVER_X - PAD),
    "server": (SERVER_X + PAD, SERVER_X + PAD + NOTE_PX),
}
"""Each text's horizontal band, ``(left, right)``: ``left`` and ``right`` are
the halves between the client and the middlebox and between the middlebox and
the server."""

_SANS_CJK = (
    '"Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", '
    '"PingFang SC", "Microsoft YaHei"'
)
# Latin monospace first (0.6 em, as text_width assumes), then CJK ones (1 em),
# then symbols (⏸, ⏲) that neither may have
_MONO = (
    'ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", "Liberation Mono", '
    f'"Noto Sans Mono CJK SC", {_SANS_CJK}, "Noto Sans Symbols 2", "Segoe UI Symbol", '
    '"Apple Symbols", "Symbola", monospace'
)

PAGE_CSS = f"""
body {{ font-family: system-ui, "Segoe UI", "Noto Sans", {_SANS_CJK}, sans-serif;
  margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; }} .teaches {{ max-width: 60em; line-height: 1.5; white-space: pre-wrap; }}
svg.ladder {{ display: block; width: 100%; height: auto; max-width: {SVG_WIDTH}px; }}
svg text {{ font-family: {_MONO}; font-size: {FONT_PX}px; white-space: pre; fill: #222; }}
.lane {{ stroke: #888; stroke-width: 1.5; }}
.lane-name {{ font-weight: bold; font-size: {LANE_FONT_PX}px; }}
.seg {{ stroke: #1f5fa8; stroke-width: 1.5; fill: none; }} .seg.s2c {{ stroke: #2e7d32; }}
.seg.drop, .seg.reset {{ stroke: #c62828; }}
.seg.inject {{ stroke: #c62828; stroke-dasharray: 4 3; }}
.cross {{ stroke: #c62828; stroke-width: 2; }}
text.verdict {{ fill: #c62828; font-weight: bold; }} text.state {{ fill: #6a1b9a; }}
text.app {{ fill: #777; }} text.kernel {{ fill: #b26a00; }}
text.still {{ fill: #555; font-style: italic; }} text.time {{ fill: #999; }}
text.legend {{ fill: #777; }}
"""
"""The diagram's style, CJK font stacks included (without a CJK font a
Chinese text is drawn as empty boxes)."""


def text_width(text: str, font_px: float) -> float:
    """Estimated width of ``text`` in a monospace font of ``font_px``: East
    Asian wide and fullwidth characters take 1 em, the others 0.6 em (so a
    band can be chosen, and a label cut, without a browser)."""
    if text.isascii():  # the common case, and a hot path on a busy board
        return len(text) * 0.6 * font_px
    ems = sum(1.0 if unicodedata.east_asian_width(ch) in ("W", "F") else 0.6 for ch in text)
    return ems * font_px


def fit(text: str, budget_px: float, font_px: float) -> tuple[str, bool]:
    """``text`` as it fits ``budget_px``: whole, or cut with "…" (then True)."""
    if text_width(text, font_px) <= budget_px:
        return text, False
    room = budget_px - text_width("…", font_px)
    if room < 0:
        return "", True
    used = 0.0
    kept = 0
    for ch in text:
        used += text_width(ch, font_px)
        if used > room:
            break
        kept += 1
    return text[:kept].rstrip() + "…", True


def _n(value: float) -> str:
    return f"{value:g}"


def _text(cls: str, x: float, y: float, anchor: str, text: str, budget: float) -> str:
    """One <text>, cut to ``budget`` px; a cut one carries its whole text in a
    <title>."""
    shown, cut = fit(text, budget, FONT_PX)
    tip = f"<title>{html.escape(text)}</title>" if cut else ""
    return (
        f'<text class="{html.escape(cls)}" x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}">'
        f"{tip}{html.escape(shown)}</text>"
    )


def svg_row(row: Row) -> str:
    """One row as an SVG ``<g>`` in its own coordinates (y from 0 to
    :data:`ROW_H`), to be moved into place by its parent; the classes name
    what each part is, ``data-kind`` and ``data-conn`` which row it is."""
    lo, hi = BANDS["time"]
    parts = [_text("time", hi, NOTE_Y, "end", row.time_text(), hi - lo)]
    if row.kind == "note":
        side = "client" if row.side == "client" else "server"
        lo, hi = BANDS[side]
        x, anchor = (hi, "end") if side == "client" else (lo, "start")
        parts.append(_text(f"note {row.style}", x, NOTE_Y, anchor, row.text, hi - lo))
        classes = f"row note {side} {row.style}"
    else:
        parts += _segment(row)
        classes = f"row segment {_direction(row)} {row.style}"
    conn = f' data-conn="{html.escape(row.conn)}"' if row.conn is not None else ""
    return (
        f'<g class="{html.escape(classes.strip())}" data-kind="{html.escape(row.kind)}"{conn}>'
        f"{''.join(parts)}</g>"
    )


def _direction(row: Row) -> str:
    return "s2c" if row.direction == "s2c" else "c2s"


def _segment(row: Row) -> list[str]:
    """The arrow, its label on the sender's half (on the drawn half when only
    the second leg is drawn) and the verdict on the other half, at the
    middlebox."""
    c2s = _direction(row) == "c2s"
    src, dst = (CLIENT_X, SERVER_X) if c2s else (SERVER_X, CLIENT_X)
    x1 = src if row.first_leg else MIDDLEBOX_X
    x2 = dst if row.second_leg else MIDDLEBOX_X
    head = ' marker-end="url(#head)"' if row.second_leg else ""
    cls = html.escape(f"seg {_direction(row)} {row.style}".strip())
    out = [f'<line class="{cls}" x1="{x1}" y1="{ARROW_Y}" x2="{x2}" y2="{ARROW_Y}"{head}/>']
    if not row.second_leg and row.style in ("drop", "reset"):
        m, y = MIDDLEBOX_X, ARROW_Y
        out.append(f'<path class="cross" d="M {m - 5} {y - 5} L {m + 5} {y + 5} '
                   f'M {m - 5} {y + 5} L {m + 5} {y - 5}"/>')  # fmt: skip
    sender, receiver = ("left", "right") if c2s else ("right", "left")
    label_half, verdict_half = (sender, receiver) if row.first_leg else (receiver, sender)
    lo, hi = BANDS[label_half]
    out.append(_text("label", (lo + hi) / 2, LABEL_Y, "middle", row.label, hi - lo))
    if row.note:
        lo, hi = BANDS[verdict_half]
        x, anchor = (lo, "start") if verdict_half == "right" else (hi, "end")
        out.append(_text("verdict", x, VERDICT_Y, anchor, row.note, hi - lo))
    return out


def svg_height(n_rows: int) -> int:
    """The SVG's height for ``n_rows`` rows (the first at :data:`HEADER_H`)."""
    return HEADER_H + n_rows * ROW_H + PAD


def svg_lanes(height: int, lang: str) -> str:
    """What is behind the rows of an SVG ``height`` tall: the arrowhead, the
    three lifelines with their names, the time column's name and the legend."""
    words = labels(lang)
    defs = (
        '<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="context-stroke"/></marker></defs>'
    )
    lanes = "".join(
        f'<line class="lane" x1="{x}" y1="{HEADER_H - 8}" x2="{x}" y2="{height - 4}"/>'
        f'<text class="lane-name" x="{x}" y="22" text-anchor="middle">'
        f"{html.escape(words[name])}</text>"
        for name, x in LANES.items()
    )
    time = f'<text class="time" x="{TIME_X + TIME_PX}" y="22" text-anchor="end">'
    time += f"{html.escape(words['time'])}</text>"
    legend = f'<text class="legend" x="{TIME_X}" y="44">{html.escape(words["legend"])}</text>'
    return defs + lanes + time + legend


def render_html(
    records: Sequence[Record],
    *,
    title: str = "tcplab",
    explanation: str = "",
    failures: Iterable[str] = (),
    lang: str = "en",
) -> str:
    """One self-contained HTML page with the ladder as inline SVG, scaled to
    the window's width (never wider than :data:`SVG_WIDTH`)."""
    words = labels(lang)
    drawn = rows(records, lang)
    height = svg_height(len(drawn))
    body = "".join(
        f'<g transform="translate(0,{HEADER_H + i * ROW_H})">{svg_row(row)}</g>'
        for i, row in enumerate(drawn)
    )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="ladder" width="100%" '
        f'style="max-width: {SVG_WIDTH}px" viewBox="0 0 {SVG_WIDTH} {height}">'
        f"{svg_lanes(height, lang)}{body}</svg>"
    )
    failed = "".join(f"<li>{html.escape(f)}</li>" for f in failures)
    failed_html = f"<h2>{words['failures']}</h2><ul>{failed}</ul>" if failed else ""
    return (
        f'<!DOCTYPE html>\n<html lang="{"zh-Hans" if lang == "zh" else "en"}"><head>'
        f'<meta charset="utf-8"><title>{html.escape(title)}</title><style>{PAGE_CSS}</style>'
        f"</head><body><h1>{html.escape(title)}</h1>{svg}{failed_html}"
        f'<div class="teaches">{html.escape(explanation)}</div></body></html>\n'
    )
