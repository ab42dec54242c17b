"""The ladder diagram: segments, verdicts and both kernels' states in one
picture (pure: events in, text or HTML out).

Three lifelines — client, middlebox, server.  Each ``segment`` event is an
arrow from its sender to the middlebox and, when it went on, from the
middlebox to the receiver; a dropped segment ends in ✗ at the middlebox, a
delayed or held one says so there.  Each ``tcp_state`` event is written on
its side's lifeline with the time spent in the previous state; what the
programs asked of their sockets (``connect()``, ``close()``…) is written the
same way.  Times are milliseconds from the first SYN.

:class:`Ladder` renders rows as events arrive (``tcplab run`` prints them
live; at most :data:`WIDTH` columns); :func:`render_html` writes one
self-contained HTML page (inline SVG and CSS, nothing fetched) to project.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping
from typing import Any

from tcplab import events

WIDTH = 100
TIME_W = 10
C = TIME_W + 2  # client lifeline column
M = 56  # middlebox
S = WIDTH - 2  # server
SHOWN_APP = {
    events.APP_CONNECT: "connect()",
    events.APP_ACCEPT: "accept()",
    events.APP_CLOSE: "close()",
    events.APP_SHUTDOWN: "shutdown()",
    events.APP_ERROR: "error",
}


def segment_label(event: Mapping[str, Any]) -> str:
    """``SA 0:1`` — flags, relative seq:ack, length if any, roles."""
    text = f"{event.get('flags', '?')} {event.get('rseq')}:{event.get('rack')}"
    if event.get("len"):
        text += f" len={event['len']}"
    roles = [t for t in event.get("tags", []) if t not in ("data", "ack")]
    if roles:
        text += " " + ",".join(roles)
    return text


def verdict_note(event: Mapping[str, Any]) -> str:
    verdict = str(event.get("verdict", "pass"))
    if verdict == "pass":
        return ""
    if verdict == "delay":
        return f"⧗{event.get('delay_ms', 0):g}ms"
    return {"drop": "✗", "hold": "⏸held", "release": "▶released", "duplicate": "×2",
            "reset": "✗RST", "inject": "RST"}.get(verdict, verdict)  # fmt: skip


class Ladder:
    """Turns events into rows of the diagram, one call per event."""

    def __init__(self, width: int = WIDTH) -> None:
        self.width = width
        self.t0: float | None = None
        self.first_ts: float | None = None

    def header(self) -> list[str]:
        line = list("   t (ms)".ljust(self.width))
        for col, name in ((C, "client"), (M, "middlebox"), (S, "server")):
            start = max(TIME_W, min(col - len(name) // 2, self.width - len(name)))
            line[start : start + len(name)] = name
        return ["".join(line).rstrip(), self._blank("")]

    def _time(self, ts: float) -> str:
        if self.first_ts is None:
            self.first_ts = ts
        base = self.t0 if self.t0 is not None else self.first_ts
        return f"{(ts - base) * 1000:+9.1f} "

    def _blank(self, stamp: str) -> str:
        row = list(stamp.ljust(TIME_W).ljust(self.width))
        for col in (C, M, S):
            row[col] = "│"
        return "".join(row).rstrip()

    def feed(self, event: Mapping[str, Any]) -> list[str]:
        """The rows for one event (none for events the diagram leaves out)."""
        name = event.get("event")
        component = event.get("component")
        ts = float(event.get("ts", 0.0))
        if name == events.SEGMENT and self.t0 is None and "syn" in event.get("tags", []):
            self.t0 = ts
        if name == events.SEGMENT:
            return [self._segment(event, self._time(ts))]
        if name == events.TCP_STATE and "-" in str(event.get("conn", "")):
            text = f"{event.get('old')} → {event.get('new')}"
            notes = []
            if event.get("in_old_ms") is not None:
                notes.append(f"{event['in_old_ms']:.0f}ms")
            if event.get("source") == "inferred":
                notes.append("inferred")
            if event.get("new") == "TIME_WAIT" and event.get("expires_ms"):
                notes.append(f"timer {event['expires_ms'] / 1000:.0f}s")
            if event.get("retrans"):
                notes.append(f"retrans {event['retrans']}")
            if notes:
                text += f" ({', '.join(notes)})"
            return [self._note(str(component), text, self._time(ts))]
        if name == events.OBSERVER_STOP and component in ("client", "server"):
            left = [
                f"{sock.get('state')} {sock['expires_ms'] / 1000:.1f}s left"
                if sock.get("state") == "TIME_WAIT" and sock.get("expires_ms") is not None
                else str(sock.get("state"))
                for sock in event.get("remaining") or []
            ]
            if not left:
                return []
            text = f"still: {left[0]}" + (f" (+{len(left) - 1} more)" if len(left) > 1 else "")
            return [self._note(str(component), text, self._time(ts))]
        if name in SHOWN_APP and component in ("client", "server"):
            text = SHOWN_APP[str(name)]
            if name == events.APP_ERROR:
                text = f"error {event.get('how')}"
            elif name == events.APP_CLOSE and event.get("how") not in (None, "close"):
                text = f"close() {event['how']}"
            if name == events.APP_CLOSE and event.get("how") == "listener":
                return []
            return [self._note(str(component), f"· {text}", self._time(ts))]
        return []

    def _note(self, side: str, text: str, stamp: str) -> str:
        row = list(self._blank(stamp).ljust(self.width))
        room = M - C - 3
        text = text[:room]
        start = C + 2 if side == "client" else S - 2 - len(text)
        row[start : start + len(text)] = text
        return "".join(row).rstrip()

    def _segment(self, event: Mapping[str, Any], stamp: str) -> str:
        row = list(self._blank(stamp).ljust(self.width))
        label = segment_label(event)
        note = verdict_note(event)
        verdict = event.get("verdict", "pass")
        c2s = event.get("dir") == "c2s"
        src, dst = (C, S) if c2s else (S, C)
        # first leg: sender → middlebox (an injected or released segment starts there)
        if verdict not in ("inject", "release"):
            _arrow(row, src, M, label, to_middle=True)
        goes_on = verdict in ("pass", "delay", "duplicate", "release", "inject")
        if goes_on:
            second = label if verdict in ("inject", "release") else ""
            _arrow(row, M, dst, second, to_middle=False)
        row[M] = "┼" if goes_on or verdict in ("hold", "drop", "reset") else row[M]
        if verdict in ("drop", "reset"):
            row[M] = "✗"
            note = note.lstrip("✗")
        if event.get("rule") and verdict not in ("pass", "inject"):
            note = f"{note} {event['rule']}".strip()
        if note:
            # the verdict sits just past the middlebox, on the receiver's side
            note = note[: S - M - 4]
            start = M + 2 if c2s else M - 1 - len(note)
            row[start : start + len(note)] = note
        return "".join(row).rstrip()


def _arrow(row: list[str], start: int, end: int, label: str, *, to_middle: bool) -> None:
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
    del to_middle


def render_text(stream: Iterable[Mapping[str, Any]], width: int = WIDTH) -> list[str]:
    """The whole diagram of a finished run."""
    ordered = sorted(stream, key=lambda e: float(e.get("ts", 0.0)))
    ladder = Ladder(width)
    # times count from the first SYN: find it before rendering
    for event in ordered:
        if event.get("event") == events.SEGMENT and "syn" in event.get("tags", []):
            ladder.t0 = float(event["ts"])
            break
    lines = ladder.header()
    for event in ordered:
        lines.extend(ladder.feed(event))
    return lines


# --- HTML ----------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.4em; } .teaches { max-width: 60em; line-height: 1.5; white-space: pre-wrap; }
svg text { font-family: ui-monospace, monospace; font-size: 12px; }
.lane { stroke: #888; stroke-width: 1.5; } .lane-name { font-weight: bold; font-size: 14px; }
.seg { stroke: #1f5fa8; stroke-width: 1.5; fill: none; } .seg.s2c { stroke: #2e7d32; }
.seg.drop, .seg.reset { stroke: #c62828; } .seg.inject { stroke: #c62828; stroke-dasharray: 4 3; }
.verdict { fill: #c62828; font-weight: bold; } .state { fill: #6a1b9a; } .app { fill: #777; }
.time { fill: #999; }
"""


def render_html(
    stream: Iterable[Mapping[str, Any]],
    *,
    title: str = "tcplab",
    explanation: str = "",
    failures: Iterable[str] = (),
) -> str:
    """One self-contained HTML page with the ladder as inline SVG."""
    ordered = sorted(stream, key=lambda e: float(e.get("ts", 0.0)))
    t0 = next(
        (float(e["ts"]) for e in ordered
         if e.get("event") == events.SEGMENT and "syn" in e.get("tags", [])),
        float(ordered[0]["ts"]) if ordered else 0.0,
    )  # fmt: skip
    xs = {"client": 200, "middlebox": 520, "server": 840}
    row_h = 22
    y = 60
    parts: list[str] = []
    for event in ordered:
        name = event.get("event")
        ts = (float(event.get("ts", t0)) - t0) * 1000
        if name == events.SEGMENT:
            parts.append(_svg_segment(event, xs, y, ts))
        elif name == events.TCP_STATE and "-" in str(event.get("conn", "")):
            side = event.get("component")
            text = f"{event.get('old')} → {event.get('new')}"
            if event.get("in_old_ms") is not None:
                text += f" ({event['in_old_ms']:.0f} ms)"
            if event.get("source") == "inferred":
                text += " inferred"
            parts.append(_svg_note(side, text, xs, y, ts, "state"))
        elif name in SHOWN_APP and event.get("component") in ("client", "server"):
            if name == events.APP_CLOSE and event.get("how") == "listener":
                continue
            text = SHOWN_APP[str(name)] + (
                f" {event.get('how')}" if name == events.APP_ERROR else ""
            )
            parts.append(_svg_note(event.get("component"), text, xs, y, ts, "app"))
        else:
            continue
        y += row_h
    height = y + 20
    lanes = "".join(
        f'<line class="lane" x1="{x}" y1="40" x2="{x}" y2="{height - 10}"/>'
        f'<text class="lane-name" x="{x}" y="30" text-anchor="middle">{name}</text>'
        for name, x in xs.items()
    )
    defs = (
        '<defs><marker id="head" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
        'fill="context-stroke"/></marker></defs>'
    )
    svg = (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="{height}" '
        f'viewBox="0 0 1200 {height}">{defs}{lanes}{"".join(parts)}</svg>'
    )
    failed = "".join(f"<li>{html.escape(f)}</li>" for f in failures)
    failed_html = f"<h2>Expectations not met</h2><ul>{failed}</ul>" if failed else ""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>{svg}{failed_html}"
        f'<div class="teaches">{html.escape(explanation)}</div></body></html>\n'
    )


def _svg_segment(event: Mapping[str, Any], xs: Mapping[str, int], y: int, ts: float) -> str:
    c2s = event.get("dir") == "c2s"
    src = xs["client"] if c2s else xs["server"]
    dst = xs["server"] if c2s else xs["client"]
    mid = xs["middlebox"]
    verdict = str(event.get("verdict", "pass"))
    cls = f"seg {'c2s' if c2s else 's2c'} {verdict}"
    label = html.escape(segment_label(event))
    out = [f'<text class="time" x="10" y="{y + 4}">{ts:+.1f} ms</text>']
    if verdict in ("inject", "release"):
        out.append(
            f'<line class="{cls}" x1="{mid}" y1="{y}" x2="{dst}" y2="{y}" marker-end="url(#head)"/>'
        )
    elif verdict in ("pass", "delay", "duplicate"):
        out.append(
            f'<line class="{cls}" x1="{src}" y1="{y}" x2="{dst}" y2="{y}" marker-end="url(#head)"/>'
        )
    else:
        out.append(f'<line class="{cls}" x1="{src}" y1="{y}" x2="{mid}" y2="{y}"/>')
    anchor_x = (src + mid) // 2 if verdict not in ("inject", "release") else (mid + dst) // 2
    out.append(f'<text x="{anchor_x}" y="{y - 4}" text-anchor="middle">{label}</text>')
    note = verdict_note(event)
    if note:
        out.append(
            f'<text class="verdict" x="{mid + (8 if c2s else -8)}" y="{y + 12}" '
            f'text-anchor="{"start" if c2s else "end"}">{html.escape(note)}'
            f"{' ' + html.escape(str(event['rule'])) if event.get('rule') else ''}</text>"
        )
    return "".join(out)


def _svg_note(side: Any, text: str, xs: Mapping[str, int], y: int, ts: float, cls: str) -> str:
    x = xs["client"] - 8 if side == "client" else xs["server"] + 8
    anchor = "end" if side == "client" else "start"
    return (
        f'<text class="time" x="10" y="{y + 4}">{ts:+.1f} ms</text>'
        f'<text class="{cls}" x="{x}" y="{y + 4}" text-anchor="{anchor}">{html.escape(text)}</text>'
    )
