"""How far behind the kernel the observer is, by source, and what tracing costs.

    sudo .venv/bin/python benchmarks/observer_lag.py [--rounds 5] [--connections 1000]

1. **Lag.**  A reference ftrace instance of this script's own records every
   ``sock:inet_sock_set_state`` of the lab's sockets while the observers run,
   once with the tracepoint source and once polling alone (``--no-trace``),
   alternating.  For each kernel transition it finds the record that
   reported it and prints, per source, p50/p99 of

   - ``ts − kernel``: how far the reported time is from the kernel's own;
   - ``logged − kernel``: when the line was written (how late a live picture
     learns of it).

   Transitions of full sockets only (the ones the tracepoint has); a kernel
   transition reported by nothing is counted as missed.

2. **Cost.**  A busy lab: ``--connections`` connections, 50 at a time, with
   and without the trace source, alternating; the client's conversations'
   wall time (first ``connect()`` to last ``conversation_done``), median of
   the rounds, and the ratio traced / polled (target ≤ 1.2×).
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reference import kernel_transitions, one_run
from core import tracefs
from core.events import App, ConversationDone, TcpState
from core.tracebuf import TraceEvent
from tcplab import runner, topology


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def lags(
    result: runner.RunResult, seen: list[TraceEvent], offset_ns: int
) -> tuple[list[float], list[float], int, int]:
    """(ts − kernel ms, logged − kernel ms, matched, missed)."""
    assert result.lab is not None
    kernel = kernel_transitions(seen, result.lab, offset_ns)
    # by side: the two ends of one connection share its name
    reported: dict[tuple[str, str, str], list[TcpState]] = collections.defaultdict(list)
    for record in result.records:
        if isinstance(record, TcpState):
            reported[(record.component, record.conn, record.shown_new)].append(record)
            if record.handed_to:
                reported[(record.component, record.conn, record.new)].append(record)
    fact, logged, missed = [], [], 0
    for side, conn, _old, new, ts in kernel:
        candidates = reported.get((side, conn, new), [])
        if not candidates:
            missed += 1
            continue
        best = min(candidates, key=lambda r: abs(r.ts - ts))
        fact.append((best.ts - ts) * 1000)
        if best.logged_ts is not None:
            logged.append((best.logged_ts - ts) * 1000)
    return fact, logged, len(fact), missed


def busy_time(result: runner.RunResult) -> float:
    starts = [r.ts for r in result.of("client", App) if r.kind == "app_connect"]
    ends = [r.ts for r in result.of("client", ConversationDone)]
    return max(ends) - min(starts)


async def main(rounds: int, connections: int) -> None:
    reason = tracefs.unavailable_reason()
    if reason is not None:
        sys.exit(f"observer_lag: needs tracefs ({reason})")
    print(f"lag: {rounds} rounds each way, 20 connections per run\n")
    by_source: dict[str, dict[str, list[float]]] = {
        "trace": {"fact": [], "logged": []},
        "poll": {"fact": [], "logged": []},
    }
    counts = {"trace": [0, 0], "poll": [0, 0]}
    for _ in range(rounds):
        for source in ("trace", "poll"):
            opts = runner.RunOptions(
                count=20,
                concurrency=4,
                server_close="linger:20ms",
                observe_for=0.3,
                trace=source == "trace",
            )
            result, seen, offset = await one_run(opts)
            fact, logged, matched, missed = lags(result, seen, offset)
            by_source[source]["fact"] += fact
            by_source[source]["logged"] += logged
            counts[source][0] += matched
            counts[source][1] += missed
    print(f"{'source':<7} {'transitions':>11} {'missed':>7}  "
          f"{'ts−kernel p50':>14} {'p99':>9}  {'logged−kernel p50':>18} {'p99':>9}")  # fmt: skip
    for source, values in by_source.items():
        fact, logged = values["fact"], values["logged"]
        print(
            f"{source:<7} {counts[source][0]:>11} {counts[source][1]:>7}  "
            f"{pct(fact, 0.5):>11.4f} ms {pct(fact, 0.99):>6.4f} ms  "
            f"{pct(logged, 0.5):>15.3f} ms {pct(logged, 0.99):>6.3f} ms"
        )
    print(f"\ncost: {connections} connections, 50 at a time, {rounds} rounds each way")
    times: dict[str, list[float]] = {"trace": [], "poll": []}
    for _ in range(rounds):
        for source in ("trace", "poll"):
            opts = runner.RunOptions(
                count=connections,
                concurrency=50,
                server_close="immediate",
                observe_for=0.5,
                trace=source == "trace",
                deadline=600,
            )
            with topology.lab() as lab:
                result = await runner.run_in_lab(lab, opts)
            assert result.client_status == 0, "a conversation failed"
            times[source].append(busy_time(result))
    traced, polled = statistics.median(times["trace"]), statistics.median(times["poll"])
    for label, source, median in (("with the trace source", "trace", traced),
                                  ("polling alone", "poll", polled)):  # fmt: skip
        runs = ", ".join(f"{t:.2f}" for t in times[source])
        print(f"  {label + ':':<22} median {median:.2f} s  ({runs})")
    print(f"  ratio traced / polled: {traced / polled:.2f}x (target <= 1.2x)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    trio.run(main, args.rounds, args.connections)
