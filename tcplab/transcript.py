"""A readable transcript of merged event lines (pure).

The runner gathers JSON event lines from every component; this turns each
one into one line of text a person can follow, with times relative to the
start of the run::

    +   0.000 ms  server   LISTEN                     198.51.100.1:7007
    +  12.418 ms  client   CLOSED → SYN_SENT (inferred) 192.0.2.1:40312-198.51.100.1:7007

and keeps a small reorder window so lines from several processes come out in
timestamp order even though their pipes deliver them a little apart.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Mapping
from typing import Any

from tcplab import events

REORDER_WINDOW_S = 0.15
"""Hold a line this long before printing it, so a line from another process
with an earlier ``ts`` can still overtake it."""

_COMPONENT_WIDTH = 7


def describe(event: Mapping[str, Any]) -> str:
    """The text of one event, without time or component."""
    name = event.get("event", "?")
    conn = event.get("conn")
    if name == events.TCP_STATE:
        text = f"{event.get('old')} → {event.get('new')}"
        notes = []
        if event.get("source") == "inferred":
            notes.append("inferred")
        if event.get("in_old_ms") is not None:
            notes.append(f"after {event['in_old_ms']:.1f} ms in {event.get('old')}")
        if event.get("new") == "TIME_WAIT" and event.get("expires_ms") is not None:
            notes.append(f"timer {event['expires_ms'] / 1000:.1f} s")
        if event.get("retrans"):
            notes.append(f"retrans {event['retrans']}")
        if notes:
            text += f"  ({', '.join(notes)})"
        return f"{text:<58} {conn or ''}".rstrip()
    if name == events.SEGMENT:
        arrow = "→" if event.get("dir") == "c2s" else "←"
        verdict = event.get("verdict", "pass")
        text = (
            f"{arrow} {event.get('flags', '?'):<4} seq={event.get('rseq')} "
            f"ack={event.get('rack')} len={event.get('len')}"
        )
        roles = [t for t in event.get("tags", []) if t not in ("data", "ack")]
        if roles:
            text += "  " + " ".join(roles)
        if verdict != "pass":
            text += f"  [{verdict.upper()}"
            if event.get("delay_ms"):
                text += f" {event['delay_ms']:g} ms"
            if event.get("rule"):
                text += f" by {event['rule']}"
            text += "]"
        return f"{text:<58} {conn or ''}".rstrip()
    if name in events.APP_EVENTS:
        call = name.removeprefix("app_")
        parts = [f"{call}()"]
        for field in ("bytes", "how", "op", "local", "detail"):
            if event.get(field) not in (None, ""):
                parts.append(f"{field}={event[field]}")
        if event.get("eof"):
            parts.append("EOF (peer's FIN)")
        return f"{' '.join(parts):<58} {conn or ''}".rstrip()
    if name == events.OBSERVER_STOP:
        left = event.get("remaining") or []
        if not left:
            return "observer: all sockets gone"
        bits = []
        for sock in left:
            bit = f"{sock.get('state')}"
            if sock.get("state") == "TIME_WAIT" and sock.get("expires_ms") is not None:
                bit += f" with {sock['expires_ms'] / 1000:.1f} s left"
            bits.append(f"{bit} ({sock.get('conn')})")
        return f"observer stopped ({event.get('reason')}): " + "; ".join(bits)
    if event.get("component") == "proxy" and name == events.DAEMON_READY:
        rules = ", ".join(f"{r['action']} {r['rule']}" for r in event.get("rules") or [])
        pace = f"; pace {event['pace_ms']:g} ms" if event.get("pace_ms") else ""
        return f"proxy forwarding; rules: {rules or 'none'}{pace}"
    if event.get("component") == "proxy" and name == events.DAEMON_DONE:
        counters = event.get("counters") or {}
        shown = ", ".join(f"{k}={v}" for k, v in counters.items() if v)
        return f"proxy stopped ({event.get('status')}): {shown or 'nothing seen'}"
    extras = {
        k: v
        for k, v in event.items()
        if k not in ("ts", "event", "component", "level", "conn") and v is not None
    }
    tail = " ".join(f"{k}={v}" for k, v in extras.items())
    return f"{name} {tail}".rstrip()


def format_line(event: Mapping[str, Any], t0: float) -> str:
    ts = float(event.get("ts", t0))
    component = str(event.get("component", "?"))
    return f"+{(ts - t0) * 1000:10.3f} ms  {component:<{_COMPONENT_WIDTH}} {describe(event)}"


def transcript(lines: Iterable[Mapping[str, Any]]) -> list[str]:
    """The whole transcript of a finished run, sorted by ``ts``."""
    ordered = sorted(lines, key=lambda e: float(e.get("ts", 0.0)))
    if not ordered:
        return []
    t0 = float(ordered[0]["ts"])
    return [format_line(e, t0) for e in ordered]


class Merger:
    """Merges events from several streams by ``ts`` with a small window.

    ``push(event, now)`` then ``pop_ready(now)`` returns the events whose
    ``ts`` is older than ``now - window``, oldest first; ``drain()`` the rest.
    """

    def __init__(self, window: float = REORDER_WINDOW_S) -> None:
        self.window = window
        self._heap: list[tuple[float, int, dict[str, Any]]] = []
        self._order = itertools.count()
        self.t0: float | None = None

    def push(self, event: dict[str, Any]) -> None:
        heapq.heappush(self._heap, (float(event["ts"]), next(self._order), event))

    def pop_ready(self, now: float) -> list[dict[str, Any]]:
        out = []
        while self._heap and self._heap[0][0] <= now - self.window:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def drain(self) -> list[dict[str, Any]]:
        out = []
        while self._heap:
            out.append(heapq.heappop(self._heap)[2])
        return out
