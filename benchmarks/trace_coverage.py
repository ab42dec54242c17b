"""Every scenario of the catalogue, held against the kernel's own tracepoint.

    sudo .venv/bin/python benchmarks/trace_coverage.py [NAME ...] [--no-trace]

For each scenario a private ftrace instance records every
``sock:inet_sock_set_state`` of the lab's sockets while ``tcplab``'s run
goes on (one scenario at a time).  Then, per scenario:

- kernel transitions of the lab's full sockets;
- how many the observers reported with ``source="trace"``, the same
  connection and states (and how many by ``poll`` / ``inferred`` instead, or
  not at all);
- the largest gap between a reported time and the kernel's;
- transitions reported twice (the same kernel transition by two records);
- what only sock_diag can report: records of request sockets, timewait
  minisocks (TIME_WAIT, an orphan's FIN_WAIT2);
- causal-rule violations, and whether the scenario's expectations held.

``--no-trace`` holds the polling observers against the same reference.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reference import kernel_transitions, one_run
from core.events import TcpState
from tcplab import causality, cli, scenario

VERBOSE = False


def compare(sc: scenario.Scenario, trace: bool) -> dict[str, float]:
    args = cli.build_parser().parse_args(["run", sc.path, *(["--no-trace"] if not trace else [])])
    sc, opts, spec = cli.scenario_run(args, sc)

    result, seen, offset = trio.run(one_run, opts, spec)
    assert result.lab is not None
    kernel = kernel_transitions(seen, result.lab, offset)
    states = [r for r in result.records if isinstance(r, TcpState)]
    # by side: the two ends of one connection share its name
    by_key: dict[tuple[str, str, str, str], list[TcpState]] = collections.defaultdict(list)
    for record in states:
        by_key[(record.component, record.conn, record.old, record.new)].append(record)
    out: dict[str, float] = collections.defaultdict(float)
    worst = 0.0
    used: set[int] = set()
    for side, conn, old, new, ts in kernel:
        out["kernel"] += 1
        candidates = [r for r in by_key[(side, conn, old, new)] if id(r) not in used]
        traced = [r for r in candidates if r.source == "trace"]
        if traced:
            best = min(traced, key=lambda r: abs(r.ts - ts))
            used.add(id(best))
            out["trace"] += 1
            worst = max(worst, abs(best.ts - ts))
            if VERBOSE and abs(best.ts - ts) > 50e-6:
                gap = (best.ts - ts) * 1e6
                what = f"{side} {conn} {old} → {new}"
                print(f"    off by {gap:.1f} µs: {what}", file=sys.stderr)
            continue
        loose = [
            r
            for r in states
            if r.component == side and r.conn == conn and r.shown_new == new and id(r) not in used
        ]
        if loose:
            used.add(id(loose[0]))
            out[loose[0].source] += 1
            how = loose[0].source
        else:
            out["missed"] += 1
            how = "missed"
        if VERBOSE:
            print(f"    {how}: {side} {conn} {old} → {new} at {ts:.6f}", file=sys.stderr)
    traced_records = [r for r in states if r.source == "trace"]
    keys = collections.Counter((r.conn, r.old, r.new, round(r.ts, 6)) for r in traced_records)
    out["twice"] = sum(n - 1 for n in keys.values() if n > 1)
    out["sock_diag_only"] = sum(1 for r in states if r.sock in ("request", "timewait"))
    out["worst_us"] = worst * 1e6
    out["violations"] = len(causality.check(result.records))
    statuses = {"client": result.client_status, "server": result.server_status}
    out["failures"] = len(scenario.check(sc, result.records, statuses))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*")
    parser.add_argument("--no-trace", action="store_true")
    parser.add_argument("-v", action="store_true", help="name what was not reported from the trace")
    args = parser.parse_args()
    global VERBOSE
    VERBOSE = args.v
    paths = [scenario.find(n) for n in args.names] if args.names else scenario.catalogue()
    total: collections.Counter[str] = collections.Counter()
    worst = 0.0
    columns = ("kernel", "trace", "poll", "inferred", "missed", "twice", "sock_diag_only")
    print(f"{'scenario':<28}" + "".join(f"{c:>9}" for c in columns)
          + f"{'worst µs':>10}{'causal':>8}{'expect':>8}")  # fmt: skip
    started = time.monotonic()
    for path in paths:
        sc = scenario.load(path)
        row = compare(sc, trace=not args.no_trace)
        worst = max(worst, row["worst_us"])
        for key in (*columns, "violations", "failures"):
            total[key] += int(row.get(key, 0))
        print(
            f"{sc.name:<28}" + "".join(f"{int(row.get(c, 0)):>9}" for c in columns)
            + f"{row['worst_us']:>10.1f}{int(row['violations']):>8}{int(row['failures']):>8}",
            flush=True,
        )  # fmt: skip
    print(
        f"{'all':<28}" + "".join(f"{total[c]:>9}" for c in columns)
        + f"{worst:>10.1f}{total['violations']:>8}{total['failures']:>8}"
    )  # fmt: skip
    share = 100 * total["trace"] / max(1, total["kernel"])
    took = time.monotonic() - started
    print(f"\nreported from the trace: {total['trace']}/{total['kernel']} ({share:.1f} %); "
          f"worst time gap {worst:.1f} µs; {total['twice']} twice; "
          f"{total['violations']} causal violations; {took:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
