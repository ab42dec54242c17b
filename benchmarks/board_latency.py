"""How soon the board's page shows a segment, and whether a run of 5,000
connections leaves the page usable — in a real browser (headless Chromium
driven by Playwright), against the terminal ladder of the same board.

Run as root from the repository root::

    .venv/bin/python benchmarks/board_latency.py [--clients 20] [--concurrency 1] [--pace 100ms]
        [--big 5000] [--big-concurrency 50] [--stream-reader]

One ``tcplab board --listen 127.0.0.1:0`` runs four scenario files written to
a temporary directory, one after another:

1. ``bench-gate-1``: one connection whose segments the middlebox holds
   (a ``hold any`` rule) until the page is open and this script listens;
   then the rule is removed and the held segments let go;
2. ``bench-burst``: ``--clients`` connections, ``--concurrency`` at a time,
   at ``--pace`` (by default the catalogue's teaching pace, 100 ms between
   segments; ``off`` sends them as fast as the kernels do: a burst of
   about a thousand segments a second), no rules (about 10 segments each);
3. ``bench-gate-2``: held like the first, while the idle page is measured;
4. ``bench-big``: ``--big`` connections, ``--big-concurrency`` at a time.

Figures:

1. **Latency** of the burst's segments, from the segment passing the
   middlebox (where the ladder draws it: its record's ``ts``, the kernel's
   receive time of the frame, or ``sent_ts``, taken just before the send,
   when the pace held it)
   to its arrow being inserted into the page's DOM (``window.tcplab.inserted``:
   wall time at insertion), p50/p99/max, and the ratio to the same latency
   on the terminal (the ladder's line read from the board's stdout: the
   reference).  Between the two, for where the time goes: the record read
   from ``/api/events`` by this script, and the page's stream message
   reaching the page (stamped by a script added before the page's own, which
   wraps ``EventSource``); ``--stream-reader`` adds ``/api/ladder`` read by
   this script (one more listener for the board to feed).  The segments come
   from ``/api/events`` and are paired in order with the page's arrows and
   the terminal's arrow lines; the pairing is checked: the same count, and
   each arrow's ``at_ms`` equal to that time minus the run's first
   SYN's ``ts`` (the terminal's to its 0.1 ms column).  Target: browser p99 ≤ 100 ms.
2. **The page under load**: while the big run goes on, every 0.2 s the time
   for a ``page.evaluate`` round trip and for a ``requestAnimationFrame`` to
   fire (measured in the page), and every second the rows in the DOM (the
   page keeps ``kept_rows``, 600), the JS heap and DOM nodes (CDP
   ``Performance.getMetrics``), the page's stream (reconnections, messages
   and bytes by type) and the board's counters (``cut_off``: listeners
   dropped for falling behind).  Printed against the same page idle just
   before the run, as ratios, with the heap after a forced garbage collection
   before and after, and the same probes after the run while the page catches
   up.  ``/api/events`` is closed once it has told the run's first SYN
   (``t0``), so the page is the board's only listener; every arrow's time is
   then ``t0 + at_ms``, every terminal arrow line's likewise, and the arrows
   never inserted are the terminal's count less the page's distinct rows.
   Targets: DOM rows ≤ kept_rows, the stream not cut off, every segment
   shown, no probe stalled, arrow p99 ≤ 100 ms.

The machine's load average is printed before and after: the board, the
lab's daemons and Chromium share its CPUs, and other work there shows in
every figure.  Everything is cleaned up: the browser is closed, the board
stopped with SIGINT and waited for (it removes its labs, each tagged with
this process's id so that they are told from other programs' labs); what it
leaves behind is reported, and a board that has to be killed has its labs
removed by ``tcplab clean``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
GATE_RULE = "bench-gate"
PORTS = {"bench-gate-1": 7101, "bench-burst": 7102, "bench-gate-2": 7103, "bench-big": 7104}
TARGET_P99_MS = 100.0

BOARD_START_S = 60.0
"""The board's first line (its URL) must come within this."""
PAGE_READY_S = 30.0
GATE_S = 60.0
"""A gate's first segment must be held within this of the step before."""
RUN_SLACK_S = 60.0
"""Beyond a scenario's own deadline, how long to wait for its end."""
SETTLE_S = 60.0
"""After a run, how long the page may take to catch up (and reconnect)."""
EVAL_TIMEOUT_S = 10.0
"""A page.evaluate that takes longer counts as a stall."""
STOP_S = 60.0
"""How long the board may take to stop after SIGINT (it removes its labs)."""

INSTRUMENT_JS = """
(() => {
  const bench = window.__bench = {opens: 0, errors: 0, messages: 0, hellos: 0, dividers: [],
                                  arrived: [], types: {}, events: []};
  const stamp = what => bench.events.push([what, Date.now() / 1000]);
  const Original = window.EventSource;
  window.EventSource = class extends Original {
    constructor(url, options) {
      super(url, options);
      this.addEventListener("open", () => { bench.opens += 1; stamp("open"); });
      this.addEventListener("error", () => { bench.errors += 1; stamp("error"); });
      this.addEventListener("message", e => {
        const now = Date.now() / 1000, d = e.data;
        bench.messages += 1;
        const type = d.slice(9, d.indexOf('"', 9));
        const count = bench.types[type] || (bench.types[type] = [0, 0]);
        count[0] += 1; count[1] += d.length;
        if (type === "row") {
          if (d.indexOf('"kind":"segment"') > 0 && d.indexOf('"kind":"segment"') < 40)
            bench.arrived.push([parseInt(d.slice(18), 10), now]);
        } else if (type === "divider") {
          const m = JSON.parse(d);
          bench.dividers.push({n: m.n, scenario: m.scenario});
        } else if (type === "hello") { bench.hellos += 1; stamp("hello"); }
      });
    }
  };
})();
"""
RAF_JS = """() => new Promise(resolve => {
  const t = performance.now();
  requestAnimationFrame(() => resolve(performance.now() - t));
})"""
STATE_JS = """() => ({
  inserted: window.tcplab.inserted.splice(0),
  arrived: __bench.arrived.splice(0),
  rows: window.tcplab.rows(),
  dom: document.querySelectorAll("#rows > *").length,
  kept: typeof GEOMETRY === "undefined" ? null : GEOMETRY.kept_rows,
  status: document.getElementById("conn").textContent,
  bench: {opens: __bench.opens, errors: __bench.errors, messages: __bench.messages,
          hellos: __bench.hellos, dividers: __bench.dividers.slice(),
          types: JSON.parse(JSON.stringify(__bench.types)), events: __bench.events.slice()},
})"""


# --- scenario files ---------------------------------------------------------------


def scenario_toml(
    name: str,
    *,
    count: int = 1,
    concurrency: int = 1,
    gate: bool = False,
    observe_for: str = "0.5s",
    deadline: str = "120s",
    pace: str | None = None,
) -> str:
    lines = [
        f'name = "{name}"',
        f'title = "board_latency: {name}"',
        'teaches = "A load for benchmarks/board_latency.py."',
        'teaches_zh = "benchmarks/board_latency.py 的负载。"',
        "",
        "[server]",
        'close = "immediate"',
        f"port = {PORTS[name]}",
        "",
        "[client]",
        f"count = {count}",
        f"concurrency = {concurrency}",
        'connect_timeout = "60s"',
        "",
        "[run]",
        f'observe_for = "{observe_for}"',
        f'deadline = "{deadline}"',
    ]
    if pace is not None:
        lines += ["", "[proxy]", f'pace = "{pace}"']
    if gate:
        lines += ["", "[[proxy.rules]]", 'action = "hold"', 'tag = "any"', f'name = "{GATE_RULE}"']
    return "\n".join(lines) + "\n"


# --- what the board says -----------------------------------------------------------


class Lines:
    """The board's stdout, each line with the wall time it was read."""

    def __init__(self, stream: Any) -> None:
        self.lines: list[tuple[float, str]] = []
        self.ended = False
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: Any) -> None:
        for raw in stream:
            self.lines.append((time.time(), raw.decode("utf-8", "replace").rstrip("\n")))
        self.ended = True


def run_end(text: str) -> bool:
    return text.startswith("every expectation held") or "expectation(s) not met" in text


class RunSpan:
    """Where scenario ``name`` starts and ends among the board's lines
    (each line looked at once, however often it is asked)."""

    def __init__(self, lines: Lines, name: str) -> None:
        self.lines = lines
        self.name = name
        self.start: int | None = None
        self.end: int | None = None
        self._next = 0

    def __call__(self) -> bool:
        lines = self.lines.lines
        while self.end is None and self._next < len(lines):
            text = lines[self._next][1]
            if self.start is None:
                if text.startswith(f"{self.name}: "):
                    self.start = self._next
            elif run_end(text):
                self.end = self._next
            self._next += 1
        return self.end is not None

    def indexes(self) -> tuple[int, int]:
        assert self.start is not None and self.end is not None
        return self.start, self.end


def arrows(lines: Lines, span: tuple[int, int]) -> list[tuple[float, float]]:
    """(read at, time column in ms) of each arrow line of a run on the terminal."""
    out = []
    for at, text in lines.lines[span[0] : span[1]]:
        if "►" in text or "◄" in text:
            out.append((at, float(text.split("│", 1)[0].strip().lstrip("≤"))))
    return out


@dataclasses.dataclass(slots=True)
class Seg:
    ts: float
    port: int
    syn: bool
    verdict: str
    arrived: float
    passed: float
    """Where the ladder puts it: when it reached the middlebox, or, for one
    the middlebox kept (paced, released), when it left (``sent_ts``), as
    ``Segment.shown_at`` says."""


class Feed:
    """One server-sent-events stream of the board, read in a thread; each
    ``data:`` line is given to ``take`` with its arrival time.  When the
    board ends the stream, it is opened again (``reconnect``) and the time
    noted in ``cuts``."""

    def __init__(self, url: str, take: Callable[[float, str], None], reconnect: bool) -> None:
        self.url = url
        self.take = take
        self.reconnect = reconnect
        self.connected = threading.Event()
        self.cuts: list[tuple[float, str]] = []
        self._stop = False
        self._response: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def path(self) -> str:
        return "/" + self.url.split("?")[0].split("/", 3)[3]

    def _run(self) -> None:
        while not self._stop:
            try:
                self._read()
                why = "the stream ended"
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
            if self._stop:
                return
            self.cuts.append((time.time(), why))
            if not self.reconnect:
                return
            time.sleep(0.2)

    def _read(self) -> None:
        timeout = httpx.Timeout(10.0, read=60.0)  # the board says something every 15 s
        with (
            httpx.Client(timeout=timeout) as client,
            client.stream("GET", self.url) as response,
        ):
            self._response = response
            response.raise_for_status()
            self.connected.set()
            for line in response.iter_lines():
                if self._stop:
                    return
                if line.startswith("data: "):
                    self.take(time.time(), line[6:])

    def close(self) -> None:
        self._stop = True
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.close()
        self._thread.join(timeout=5)


class Events:
    """``/api/events``: the middlebox's segments (the rest is skipped unparsed)."""

    def __init__(self, base: str, token: str) -> None:
        self.segments: list[Seg] = []
        self.feed = Feed(f"{base}/api/events?token={token}", self._take, reconnect=True)

    def _take(self, arrived: float, data: str) -> None:
        if '"event":"segment"' not in data:
            return
        record = json.loads(data)
        conn = record.get("conn", "")
        port = int(conn.rsplit(":", 1)[1]) if ":" in conn else 0
        syn = "syn" in record.get("tags", ())
        ts = record["ts"]
        sent, verdict = record.get("sent_ts"), record.get("verdict", "pass")
        kept = verdict == "release" or (verdict == "pass" and record.get("delay_ms"))
        passed = sent if sent is not None and kept else ts
        self.segments.append(Seg(ts, port, syn, verdict, arrived, passed))

    def of(self, name: str) -> list[Seg]:
        return [s for s in self.segments if s.port == PORTS[name]]


class Ladder:
    """``/api/ladder`` (the page's stream) read by Python: its segment rows
    (n, at_ms, arrival) and its dividers (scenario → n)."""

    def __init__(self, base: str, token: str) -> None:
        self.rows: list[tuple[int, float, float]] = []
        self.dividers: dict[str, int] = {}
        self.feed = Feed(f"{base}/api/ladder?token={token}", self._take, reconnect=False)

    def _take(self, arrived: float, data: str) -> None:
        if data.startswith('{"type":"row"'):
            m = json.loads(data)
            if m.get("kind") == "segment":
                self.rows.append((m["n"], m["at_ms"], arrived))
        elif data.startswith('{"type":"divider"'):
            m = json.loads(data)
            self.dividers.setdefault(m.get("scenario") or "", m["n"])


# --- waiting, with a deadline -----------------------------------------------------


class Timeout(RuntimeError):
    pass


async def wait_until(test: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = test()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"no {what} within {seconds:.0f} s")
        await asyncio.sleep(0.05)


async def run_span(lines: Lines, name: str, seconds: float) -> tuple[int, int]:
    """Indexes of the board's lines that start and end scenario ``name``."""
    span = RunSpan(lines, name)
    await wait_until(span, seconds, f"end of {name}")
    return span.indexes()


# --- the page ---------------------------------------------------------------------


@dataclasses.dataclass
class Sample:
    at: float
    rtt_ms: float | None = None
    raf_ms: float | None = None


@dataclasses.dataclass
class Snapshot:
    at: float
    rows: int
    dom: int
    heap_mb: float
    nodes: int
    status: str
    bench: dict[str, Any]


class Page:
    """The board's page in Chromium, and what this script reads of it."""

    def __init__(self, page: Any, cdp: Any) -> None:
        self.page = page
        self.cdp = cdp
        self.inserted: list[dict[str, Any]] = []
        self.arrived: dict[int, float] = {}
        """Row n → when its message first reached the page."""
        self.samples: list[Sample] = []
        self.snapshots: list[Snapshot] = []
        self.stalls = 0
        self.kept: int | None = None

    async def evaluate(self, script: str) -> Any:
        try:
            return await asyncio.wait_for(self.page.evaluate(script), EVAL_TIMEOUT_S)
        except TimeoutError:
            self.stalls += 1
            return None

    async def metrics(self, collect: bool = False) -> dict[str, float]:
        if collect:
            await asyncio.wait_for(self.cdp.send("HeapProfiler.collectGarbage"), EVAL_TIMEOUT_S)
        answer = await asyncio.wait_for(self.cdp.send("Performance.getMetrics"), EVAL_TIMEOUT_S)
        return {m["name"]: m["value"] for m in answer["metrics"]}

    async def snapshot(self) -> Snapshot | None:
        state = await self.evaluate(STATE_JS)
        if state is None:
            return None
        self.inserted += state["inserted"]
        for n, at in state["arrived"]:
            self.arrived.setdefault(n, at)
        self.kept = state["kept"]
        metrics = await self.metrics()
        snap = Snapshot(
            time.time(),
            state["rows"],
            state["dom"],
            metrics.get("JSHeapUsedSize", 0) / 2**20,
            int(metrics.get("Nodes", 0)),
            state["status"],
            state["bench"],
        )
        self.snapshots.append(snap)
        return snap

    async def probe(self) -> None:
        """One evaluate round trip and one animation frame."""
        started = time.perf_counter()
        ok = await self.evaluate("0")
        rtt = (time.perf_counter() - started) * 1000 if ok is not None else None
        raf = await self.evaluate(RAF_JS)
        self.samples.append(Sample(time.time(), rtt, raf))

    async def watch(self, until: Callable[[], bool], limit_s: float, period_s: float = 0.2) -> None:
        """Probe every ``period_s`` and snapshot every second until ``until()``."""
        deadline = time.monotonic() + limit_s
        last_snap = 0.0
        while not until() and time.monotonic() < deadline:
            tick = time.monotonic()
            await self.probe()
            if tick - last_snap >= 1.0:
                last_snap = tick
                await self.snapshot()
            await asyncio.sleep(max(0.0, period_s - (time.monotonic() - tick)))

    async def settle(self, done: Callable[[], bool], limit_s: float, quiet_s: float = 1.0) -> None:
        """Until ``done()`` and no arrow inserted for ``quiet_s`` (or ``limit_s``
        passed); probing meanwhile."""
        deadline = time.monotonic() + limit_s
        quiet_since = time.monotonic()
        seen = -1
        while time.monotonic() < deadline:
            await self.probe()
            await self.snapshot()
            if len(self.inserted) != seen:
                seen, quiet_since = len(self.inserted), time.monotonic()
            elif done() and time.monotonic() - quiet_since >= quiet_s:
                return
            await asyncio.sleep(0.2)

    def live(self) -> bool:
        return bool(self.snapshots) and self.snapshots[-1].status.startswith("●")


# --- figures ----------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def at_ms(ts: float, t0: float) -> float:
    """The page's ``at_ms`` of a segment at ``ts`` (tcplab.board.model's rounding)."""
    return round((ts - t0) * 1000, 3)


def time_zero(segments: Sequence[Seg]) -> float:
    syn = [s.ts for s in segments if s.syn]
    return syn[0] if syn else segments[0].ts


HEAD = f"  {'segment → shown':<34} {'p50':>12} {'p99':>12} {'max':>12}  {'n':>6}"


def row(label: str, values: Sequence[float], note: str = "") -> str:
    return (
        f"  {label:<34} {pct(values, 0.5):9.1f} ms {pct(values, 0.99):9.1f} ms "
        f"{max(values, default=float('nan')):9.1f} ms  {len(values):>6}  {note}"
    ).rstrip()


def few(items: Iterable[str], most: int = 8) -> str:
    """The first ``most`` of ``items``, and how many more."""
    listed = list(items)
    more = f" … and {len(listed) - most} more" if len(listed) > most else ""
    return (", ".join(listed[:most]) or "none") + more


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def ratio_row(label: str, a: Sequence[float], b: Sequence[float]) -> str:
    if not a or not b:
        return f"  {label:<34} {'-':>12}"
    return (
        f"  {label:<34} {ratio(pct(a, 0.5), pct(b, 0.5)):>12} "
        f"{ratio(pct(a, 0.99), pct(b, 0.99)):>12} {ratio(max(a), max(b)):>12}"
    )


def in_range(entries: Sequence[dict[str, Any]], low: int, high: float) -> list[dict[str, Any]]:
    return [e for e in entries if low <= e["n"] < high]


def burst_figures(
    segs: list[Seg],
    page: list[dict[str, Any]],
    arrived: dict[int, float],
    terminal: list[tuple[float, float]],
    ladder: list[tuple[int, float, float]] | None,
) -> bool:
    """Part 1: print the figures; whether the target was met."""
    t0 = time_zero(segs)
    keys = [at_ms(s.passed, t0) for s in segs]
    counts = f"{len(segs)} segments, {len(page)} page arrows, {len(terminal)} terminal lines"
    if ladder is not None:
        counts += f", {len(ladder)} stream rows"
    if not (len(segs) == len(page) == len(terminal) == len(ladder or segs)):
        print(f"  pairing FAILED: {counts}")
        return False
    page_off = sum(1 for e, k in zip(page, keys, strict=True) if e["at_ms"] != k)
    ladder_off = sum(1 for r, k in zip(ladder or [], keys, strict=False) if r[1] != k)
    term_off = sum(1 for r, k in zip(terminal, keys, strict=True) if abs(r[1] - k) > 0.051)
    worst = max(abs(e["at_ms"] / 1000 + t0 - s.passed) for e, s in zip(page, segs, strict=True))
    print(
        f"  pairing: {counts}; at_ms ≠ ts − t0: page {page_off}, terminal {term_off} "
        f"(±0.05 ms, its 0.1 ms column){f', stream {ladder_off}' if ladder else ''}; "
        f"max |t0 + at_ms − ts| {worst * 1e6:.1f} µs"
    )
    browser = [(e["wall"] - s.passed) * 1000 for e, s in zip(page, segs, strict=True)]
    term = [(r[0] - s.passed) * 1000 for r, s in zip(terminal, segs, strict=True)]
    records = [(s.arrived - s.passed) * 1000 for s in segs]
    reached = [
        (arrived[e["n"]] - s.passed) * 1000
        for e, s in zip(page, segs, strict=True)
        if e["n"] in arrived
    ]
    print(HEAD)
    print(row("terminal (board's stdout)", term, "reference"))
    print(row("/api/events read by Python", records))
    if ladder:
        stream = [(r[2] - s.passed) * 1000 for r, s in zip(ladder, segs, strict=True)]
        print(row("/api/ladder read by Python", stream))
    print(row("/api/ladder message in the page", reached))
    print(row("arrow in the page's DOM", browser))
    print(ratio_row("browser DOM ÷ terminal", browser, term))
    met = pct(browser, 0.99) <= TARGET_P99_MS and not (page_off or ladder_off or term_off)
    print(
        f"  target: browser p99 ≤ {TARGET_P99_MS:.0f} ms: "
        f"{'met' if met else 'NOT met'} ({pct(browser, 0.99):.1f} ms)"
    )
    return met


@dataclasses.dataclass
class BigRun:
    """What part 2 gathered."""

    idle: tuple[float, float]
    run: tuple[float, float]
    idle_heap: dict[str, float]
    after_heap: dict[str, float]
    t0: float | None
    entries: list[dict[str, Any]]
    terminal: list[tuple[float, float]]
    counters: list[dict[str, Any]]
    cuts: list[tuple[float, str]]
    """When /api/events was cut off."""


def load_figures(page: Page, big: BigRun, connections: int) -> bool:
    """Part 2: print the figures; whether the targets were met."""

    def between(lo: float, hi: float) -> tuple[list[Sample], list[Snapshot]]:
        return (
            [s for s in page.samples if lo <= s.at <= hi],
            [s for s in page.snapshots if lo <= s.at <= hi],
        )

    idle_samples, idle_snaps = between(*big.idle)
    run_samples, run_snaps = between(*big.run)
    after_samples, after_snaps = between(big.run[1], float("inf"))
    start = big.run[0]

    def values(samples: list[Sample], field: str) -> list[float]:
        return [v for s in samples if (v := getattr(s, field)) is not None]

    kept = page.kept or 0
    print(
        f"  run: {big.run[1] - start:.1f} s on the terminal; probes: {len(idle_samples)} idle, "
        f"{len(run_samples)} during the run, {len(after_samples)} after it while the page "
        f"caught up; evaluate stalls (> {EVAL_TIMEOUT_S:.0f} s): {page.stalls}"
    )
    print(f"  {'':<30} {'idle':>10} {'during run':>12} {'ratio':>7} {'after run':>11}")

    def line(label: str, a: float, b: float, c: float, unit: str = "") -> None:
        def cell(value: float, width: int) -> str:
            return f"{'-':>{width}}  " if value != value else f"{value:>{width}.1f}{unit:<2}"

        quotient = ratio(b, a) if a == a and b == b else "-"
        text = f"  {label:<30} {cell(a, 8)} {cell(b, 10)} {quotient:>7} {cell(c, 9)}"
        print(text.rstrip())

    nan = float("nan")
    for field, name in (("rtt_ms", "evaluate round trip"), ("raf_ms", "animation frame")):
        a, b, c = (values(x, field) for x in (idle_samples, run_samples, after_samples))
        line(f"{name} p50", pct(a, 0.5), pct(b, 0.5), pct(c, 0.5), "ms")
        line(f"{name} p99", pct(a, 0.99), pct(b, 0.99), pct(c, 0.99), "ms")
        line(f"{name} max", max(a, default=nan), max(b, default=nan), max(c, default=nan), "ms")

    def most(snaps: list[Snapshot], field: str) -> float:
        return max((getattr(s, field) for s in snaps), default=nan)

    line("DOM rows (max)", most(idle_snaps, "dom"), most(run_snaps, "dom"),
         most(after_snaps, "dom"))  # fmt: skip
    line("page's rows() (max)", most(idle_snaps, "rows"), most(run_snaps, "rows"),
         most(after_snaps, "rows"))  # fmt: skip
    line("JS heap MiB (max, no GC)", most(idle_snaps, "heap_mb"), most(run_snaps, "heap_mb"),
         most(after_snaps, "heap_mb"))  # fmt: skip
    line("JS heap MiB (after a GC)", big.idle_heap.get("JSHeapUsedSize", 0) / 2**20, nan,
         big.after_heap.get("JSHeapUsedSize", 0) / 2**20)  # fmt: skip
    line("DOM nodes (max)", most(idle_snaps, "nodes"), most(run_snaps, "nodes"),
         most(after_snaps, "nodes"))  # fmt: skip
    line("DOM nodes (after a GC)", big.idle_heap.get("Nodes", 0), nan,
         big.after_heap.get("Nodes", 0))  # fmt: skip
    unanswered = sum(1 for s in run_samples if s.rtt_ms is None or s.raf_ms is None)
    dom_max = max((s.dom for s in run_snaps + after_snaps), default=0)
    rows_max = max((s.rows for s in run_snaps + after_snaps), default=0)

    # the page's stream
    first = (idle_snaps or page.snapshots)[0].bench
    last = page.snapshots[-1].bench
    reconnects = last["opens"] - first["opens"]
    errors = last["errors"] - first["errors"]
    cut = max((c.get("cut_off", 0) for c in big.counters), default=0)
    cut_before = big.counters[0].get("cut_off", 0) if big.counters else 0
    types = {
        t: (v[0] - first["types"].get(t, [0, 0])[0], v[1] - first["types"].get(t, [0, 0])[1])
        for t, v in last["types"].items()
    }
    total = sum(v[1] for v in types.values()) or 1
    shares = ", ".join(
        f"{t} {v[0]} ({v[1] / 2**20:.1f} MiB, {v[1] / total:.0%})"
        for t, v in sorted(types.items(), key=lambda kv: -kv[1][1])
        if v[0]
    )
    print(f"  page's stream during and after the run: {shares}")
    events = [(what, at - start) for what, at in last["events"] if at >= big.idle[1]]
    counted = [
        f"{b['at'] - start:+.0f} s"
        for a, b in zip(big.counters, big.counters[1:], strict=False)
        if b.get("cut_off", 0) > a.get("cut_off", 0)
    ]
    print(
        f"  board's cut_off {cut_before} → {cut} listeners, counted by {few(counted)} "
        "(times from the run's start; a listener cut off still gets what was queued for it)"
    )
    print(
        f"  page's EventSource: {reconnects} reopened, {errors} errors: "
        f"{few(f'{what} {at:+.1f} s' for what, at in events)}"
    )
    changes = []
    for before, after in zip(page.snapshots, page.snapshots[1:], strict=False):
        if after.status != before.status and after.at >= big.idle[1]:
            changes.append(f"'{after.status}' by {after.at - start:+.1f} s")
    if changes:
        print(f"  page's status shown: {few(changes)}")
    if big.cuts:
        cuts = ", ".join(f"{at - start:+.1f} s ({why[:80]})" for at, why in big.cuts)
        print(f"  /api/events read by this script was cut off (and reopened): {cuts}")
    print(
        "  (/api/events is closed once the run's first SYN has come: the page is the "
        "board's only listener)"
    )

    # segment → arrow, timed from t0 + at_ms
    if big.t0 is None:
        print("  no SYN of the run came through /api/events: no latency figures")
        return False
    t0 = big.t0
    first_wall: dict[int, tuple[float, float]] = {}
    for e in big.entries:
        first_wall.setdefault(e["n"], (e["at_ms"], e["wall"]))
    browser = [(wall - (t0 + ms / 1000)) * 1000 for ms, wall in first_wall.values()]
    reached = [
        (page.arrived[n] - (t0 + ms / 1000)) * 1000
        for n, (ms, _wall) in first_wall.items()
        if n in page.arrived
    ]
    term = [(at - (t0 + ms / 1000)) * 1000 for at, ms in big.terminal]
    unshown = len(big.terminal) - len(first_wall)
    again = len(big.entries) - len(first_wall)
    print(
        f"  segments: {len(big.terminal)} arrows on the terminal ({connections} connections); "
        f"page: {len(first_wall)} inserted ({again} inserted again by a replay), never "
        f"shown {unshown}"
    )
    print(HEAD.replace("segment → shown", "segment → shown, under load"))
    print(row("terminal (board's stdout)", term, "reference"))
    print(row("/api/ladder message in the page", reached))
    print(row("arrow in the page's DOM", browser))
    print(ratio_row("browser DOM ÷ terminal", browser, term))
    checks = {
        f"DOM rows ≤ kept_rows ({kept})": kept > 0 and dom_max <= kept and rows_max <= kept,
        "the page's stream not cut off": reconnects == 0 and cut == cut_before,
        "every segment shown": unshown == 0 and bool(big.terminal),
        "no probe stalled": page.stalls == 0 and not unanswered,
        f"arrow p99 ≤ {TARGET_P99_MS:.0f} ms under load": pct(browser, 0.99) <= TARGET_P99_MS,
    }
    for what, ok in checks.items():
        print(f"  target: {what}: {'met' if ok else 'NOT met'}")
    return all(checks.values())


# --- the board's process ------------------------------------------------------------


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def steal_s() -> float:
    """CPU time the hypervisor has taken from this VM's CPUs, all of them
    together (``/proc/stat``'s ``steal``, in clock ticks): the board's
    process stalls for tens of milliseconds when it happens, whatever the
    board does, and that shows in every p99 here."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def descendants(pid: int) -> set[int]:
    """Processes under ``pid`` (from /proc)."""
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        children[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def stop_board(proc: subprocess.Popen[bytes], labs: Labs) -> None:
    """SIGINT, wait; kill what is left (by pid) and have ``tcplab clean``
    remove its labs; say what, if anything, stayed behind."""
    under = descendants(proc.pid)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            print(f"cleanup: the board did not stop within {STOP_S:.0f} s of SIGINT: killed")
            for pid in [proc.pid, *under]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(timeout=10)
            subprocess.run(
                [sys.executable, "-m", "tcplab.entry", "clean"], cwd=ROOT, timeout=60, check=False
            )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in under):
        time.sleep(0.1)
    left = sorted(p for p in under if alive(p))
    stray = labs.left()
    print(
        f"cleanup: board exit status {proc.returncode}; its {len(labs.seen)} labs "
        f"({', '.join(sorted(labs.seen))}): left behind {stray or 'nothing'}; "
        f"its processes left {left or 'none'}"
    )


# --- the benchmark ---------------------------------------------------------------------


def command(args: argparse.Namespace) -> str:
    python = Path(sys.executable)
    with contextlib.suppress(ValueError):
        python = python.relative_to(ROOT)
    argv = [
        str(python),
        "benchmarks/board_latency.py",
        f"--clients={args.clients}",
        f"--concurrency={args.concurrency}",
        f"--pace={args.pace}",
        f"--big={args.big}",
        f"--big-concurrency={args.big_concurrency}",
        f"--big-deadline={args.big_deadline}",
        f"--idle={args.idle:g}",
    ]
    if args.stream_reader:
        argv.append("--stream-reader")
    return f"cd {shlex.quote(str(ROOT))} && {shlex.join(argv)}"


async def open_gate(client: httpx.AsyncClient, events: Events, name: str) -> None:
    """Once ``name``'s first segment is held, remove the rule and let go."""
    await wait_until(
        lambda: any(s.verdict == "hold" for s in events.of(name)), GATE_S, f"held segment of {name}"
    )
    removed = await client.delete(f"/api/rules/{GATE_RULE}")
    released = await client.post("/api/release", json={})
    if removed.status_code != 204 or released.status_code != 200:
        raise RuntimeError(
            f"opening {name}: DELETE rule {removed.status_code} {removed.text[:200]}; "
            f"release {released.status_code} {released.text[:200]}"
        )


async def counters_loop(
    client: httpx.AsyncClient, out: list[dict[str, Any]], stop: asyncio.Event
) -> None:
    while not stop.is_set():
        with contextlib.suppress(httpx.HTTPError, ValueError):
            answer = await client.get("/api/counters")
            out.append({"at": time.time(), **answer.json().get("board", {})})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)


def quiet(events: Events, seconds: float) -> bool:
    """No segment from /api/events for ``seconds``."""
    return not events.segments or time.time() - events.segments[-1].arrived >= seconds


def divider(page: Page, name: str) -> int | None:
    """The row number of scenario ``name``'s divider, as the page first had it."""
    if not page.snapshots:
        return None
    dividers = page.snapshots[-1].bench["dividers"]
    return next((d["n"] for d in dividers if d["scenario"] == name), None)


async def burst(page: Page, events: Events, ladder: Ladder | None, lines: Lines) -> bool:
    span = await run_span(lines, "bench-burst", 120 + RUN_SLACK_S)

    def done() -> bool:
        expected = len(events.of("bench-gate-1")) + len(events.of("bench-burst"))
        return quiet(events, 1.0) and len(page.inserted) >= expected

    await page.settle(done, SETTLE_S)
    low = divider(page, "bench-burst")
    if low is None:
        print("  the page never had the run's divider: its rows cannot be told apart")
        return False
    high = divider(page, "bench-gate-2") or float("inf")
    return burst_figures(
        events.of("bench-burst"),
        in_range(page.inserted, low, high),
        page.arrived,
        arrows(lines, span),
        None if ladder is None else [r for r in ladder.rows if low <= r[0] < high],
    )


def cpu_s(pid: int) -> float:
    """User + system time of process ``pid`` so far (its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def close_at_syn(events: Events, name: str, limit_s: float) -> float | None:
    """The run's first SYN's time, once /api/events has told it; then the
    stream is closed, so that the page is the board's only listener."""
    try:
        ts: float = await wait_until(
            lambda: next((s.ts for s in events.of(name) if s.syn), None), limit_s, "first SYN"
        )
        return ts
    except Timeout:
        return None
    finally:
        await asyncio.to_thread(events.feed.close)


async def big_run(
    args: argparse.Namespace,
    page: Page,
    events: Events,
    lines: Lines,
    client: httpx.AsyncClient,
    board_pid: int,
) -> bool:
    await wait_until(
        lambda: any(s.verdict == "hold" for s in events.of("bench-gate-2")),
        GATE_S,
        "held segment of bench-gate-2",
    )
    await page.settle(lambda: True, SETTLE_S)
    idle_heap = await page.metrics(collect=True)
    idle_from = time.time()
    await page.watch(lambda: False, args.idle)
    idle = (idle_from, time.time())
    mark = len(page.inserted)
    cuts_before = len(events.feed.cuts)
    stop = asyncio.Event()
    counters: list[dict[str, Any]] = []
    poller = asyncio.ensure_future(counters_loop(client, counters, stop))
    limit = args.big_deadline + 2 * RUN_SLACK_S
    first_syn = asyncio.ensure_future(close_at_syn(events, "bench-big", limit))
    cpu_before = cpu_s(board_pid)
    try:
        await open_gate(client, events, "bench-gate-2")
        span = RunSpan(lines, "bench-big")
        await page.watch(span, limit)
        if not span():
            raise Timeout(f"no end of bench-big within {limit:.0f} s")
        cpu = cpu_s(board_pid) - cpu_before
        start, end = span.indexes()
        terminal = arrows(lines, (start, end))
        run = (lines.lines[start][0], lines.lines[end][0])
        # the page catches up (and reconnects, if it was cut off)
        await page.settle(page.live, SETTLE_S, quiet_s=2.0)
        after_heap = await page.metrics(collect=True)
        await page.snapshot()
    finally:
        stop.set()
        await poller
        t0 = await first_syn
    low = divider(page, "bench-big")
    print(
        f"\n2. the page under {args.big} connections, {args.big_concurrency} at a time "
        f"(reference: the same page idle for {args.idle:g} s just before)"
    )
    print(
        f"  the board's process used {cpu:.1f} s of CPU in the run's {run[1] - run[0]:.1f} s "
        f"({cpu / max(run[1] - run[0], 1e-9):.0%} of a core; its daemons not counted)"
    )
    if low is None:
        print("  the page never had the run's divider: its rows cannot be told apart")
        return False
    figures = BigRun(
        idle=idle,
        run=run,
        idle_heap=idle_heap,
        after_heap=after_heap,
        t0=t0,
        entries=in_range(page.inserted[mark:], low, float("inf")),
        terminal=terminal,
        counters=counters,
        cuts=events.feed.cuts[cuts_before:],
    )
    return load_figures(page, figures, args.big)


async def measure(
    args: argparse.Namespace, lines: Lines, base: str, token: str, board_pid: int
) -> bool:
    from playwright.async_api import async_playwright

    events = Events(base, token)
    ladder = Ladder(base, token) if args.stream_reader else None
    feeds = [events.feed] + ([ladder.feed] if ladder else [])
    try:
        for feed in feeds:
            await wait_until(feed.connected.is_set, 10, f"connection to {feed.path}")
        headers = {"Authorization": f"Bearer {token}"}
        async with (
            httpx.AsyncClient(base_url=base, headers=headers, timeout=15) as client,
            async_playwright() as p,
        ):
            with tempfile.TemporaryDirectory(prefix="board-latency-chromium-") as profile:
                ctx = await p.chromium.launch_persistent_context(
                    profile,
                    executable_path=CHROMIUM,
                    headless=True,
                    args=["--headless", "--no-sandbox", "--disable-gpu"],
                    viewport={"width": 1400, "height": 1100},
                    timeout=PAGE_READY_S * 1000,
                )
                try:
                    tab = ctx.pages[0] if ctx.pages else await ctx.new_page()
                    await tab.add_init_script(INSTRUMENT_JS)
                    await tab.goto(f"{base}/?token={token}", timeout=PAGE_READY_S * 1000)
                    await tab.wait_for_function(
                        "() => window.__bench && __bench.opens > 0 && window.tcplab",
                        timeout=PAGE_READY_S * 1000,
                    )
                    cdp = await ctx.new_cdp_session(tab)
                    await cdp.send("Performance.enable")
                    page = Page(tab, cdp)
                    await open_gate(client, events, "bench-gate-1")
                    listeners = "the page and /api/events" + (" and /api/ladder" if ladder else "")
                    print(
                        f"\n1. segment → arrow: {args.clients} connections, "
                        f"{args.concurrency} at a time, pace {args.pace}; the board's listeners: "
                        f"{listeners}"
                    )
                    stolen = steal_s()
                    met = await burst(page, events, ladder, lines)
                    stolen_ms = (steal_s() - stolen) * 1000
                    print(
                        f"  the hypervisor's steal during the burst: {stolen_ms:.0f} ms of CPU"
                        " (a vCPU stopped stalls whatever runs on it)"
                    )
                    if ladder:
                        ladder.feed.close()
                    met &= await big_run(args, page, events, lines, client, board_pid)
                finally:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(ctx.close(), 30)
    finally:
        for feed in feeds:
            feed.close()
    return met


class Labs:
    """The labs the board makes, from their records under /run/tcplab (the
    board's environment gives them a tag of this process's)."""

    def __init__(self, tag: str) -> None:
        from tcplab.topology import ownership

        self.tag = tag
        self.env = ownership.RUN_TAG_ENV
        self.records = ownership.RECORD_DIR
        self.seen: dict[str, list[str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.look()

    def look(self) -> None:
        for path in self.records.glob("*.json"):
            with contextlib.suppress(OSError, ValueError):
                record = json.loads(path.read_text())
                if isinstance(record, dict) and record.get("tag") == self.tag:
                    self.seen[str(record.get("lab"))] = list(record.get("namespaces", []))

    def left(self) -> list[str]:
        """Namespaces and records of these labs still there."""
        self._stop.set()
        self._thread.join(timeout=5)
        present = netns_names()
        out = [ns for names in self.seen.values() for ns in names if ns in present]
        out += [f"record {lab}" for lab in self.seen if (self.records / f"{lab}.json").exists()]
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20, help="connections of part 1")
    parser.add_argument("--concurrency", type=int, default=1, help="part 1's, at a time")
    parser.add_argument(
        "--pace",
        default="100ms",
        help="part 1's pace (the catalogue's teaching pace; 'off' for a raw burst)",
    )
    parser.add_argument("--big", type=int, default=5000, help="connections of the big run")
    parser.add_argument("--big-concurrency", type=int, default=50)
    parser.add_argument(
        "--big-deadline", type=int, default=1200, help="seconds the big run may take"
    )
    parser.add_argument("--idle", type=float, default=5.0, help="seconds the idle page is probed")
    parser.add_argument(
        "--stream-reader",
        action="store_true",
        help="also read /api/ladder from Python during the burst (a second listener)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (the board builds labs)", file=sys.stderr)
        return 1
    print(f"command: {command(args)}", flush=True)
    print(f"machine: {os.cpu_count()} CPUs, load average {load()} before", flush=True)
    labs = Labs(f"board-latency-{os.getpid()}")
    with tempfile.TemporaryDirectory(prefix="board-latency-") as tmp:
        files = {
            "bench-gate-1": scenario_toml("bench-gate-1", gate=True, observe_for="0s"),
            "bench-burst": scenario_toml(
                "bench-burst",
                count=args.clients,
                concurrency=args.concurrency,
                pace=None if args.pace == "off" else args.pace,
                deadline="600s",
            ),
            "bench-gate-2": scenario_toml("bench-gate-2", gate=True, observe_for="0s"),
            "bench-big": scenario_toml(
                "bench-big",
                count=args.big,
                concurrency=args.big_concurrency,
                observe_for="0.2s",
                deadline=f"{args.big_deadline}s",
            ),
        }
        paths = []
        for name, text in files.items():
            path = Path(tmp) / f"{name}.toml"
            path.write_text(text)
            paths.append(str(path))
        stderr = open(Path(tmp) / "board.err", "w+b")  # noqa: SIM115 - closed below
        argv = [sys.executable, "-m", "tcplab.entry", "board", "--listen", "127.0.0.1:0", *paths]
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env={**os.environ, labs.env: labs.tag},
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C here reaches it once, from stop_board
        )
        assert proc.stdout is not None
        lines = Lines(proc.stdout)
        met = False
        try:
            asyncio.run(
                wait_until(
                    lambda: lines.lines or lines.ended, BOARD_START_S, "first line from the board"
                )
            )
            if not lines.lines:
                raise RuntimeError("the board printed nothing")
            url = lines.lines[0][1].removeprefix("tcplab board: ")
            base, _, token = url.partition("/?token=")
            if not token:
                raise RuntimeError(f"not the board's URL: {lines.lines[0][1]!r}")
            print(f"board: {base} (pid {proc.pid}); scenario files in {tmp}", flush=True)
            met = asyncio.run(measure(args, lines, base, token, proc.pid))
        except Exception as exc:
            print(f"\nFAILED: {type(exc).__name__}: {exc}")
        finally:
            print(f"\nmachine: load average {load()} after")
            labs.look()
            stop_board(proc, labs)
            stderr.seek(0)
            errors = stderr.read().decode("utf-8", "replace").strip().splitlines()
            stderr.close()
            if errors:
                tracebacks = sum(1 for text in errors if text.startswith("Traceback"))
                print(f"board's stderr: {len(errors)} lines, {tracebacks} tracebacks; the last:")
                for text in errors[-12:]:
                    print(f"  {text}")
    print(f"\nall targets {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
