"""``tcplab list|show|schema|verify|role``: the scenario catalogue, and
running all of it (``verify``: each scenario a ``tcplab run --json`` of its own)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from core import events
from core.proc import child_env
from tcplab.cli.common import RUN_JSON, need_net_admin
from tcplab.cli.run import load_scenario


def cmd_list(args: argparse.Namespace) -> int:
    from tcplab import scenario

    for path in scenario.catalogue():
        try:
            sc = scenario.load(path)
        except scenario.ScenarioError as exc:
            print(f"{path.stem:<28} (invalid: {exc})")
            continue
        print(f"{sc.name:<28} {sc.title}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    sc = load_scenario(args.name, "show")
    print(f"{sc.name}: {sc.title}\n")
    print(sc.teaches_zh if args.lang == "zh" else sc.teaches)
    print()
    breaks = [f"{r.action} {r.match.from_ + ':' if r.match.from_ else ''}{r.match.tag or 'any'}"
              + (f"@{','.join(map(str, sorted(r.match.nth)))}" if r.match.nth else "")
              + (f" by {r.delay * 1000:g} ms" if r.delay else "") for r in sc.rules]  # fmt: skip
    print("faults: " + ("; ".join(breaks) if breaks else "none"))
    if sc.pace:
        print(f"pace: every segment {sc.pace * 1000:g} ms late")
    print(f"server: {dict(sc.server) or 'defaults'}; client: {dict(sc.client) or 'defaults'}")
    if sc.sysctls:
        print(f"sysctls: {dict(sc.sysctls)}")
    print(f"\nrun it: tcplab run {sc.name}")
    return 0


def cmd_schema(_args: argparse.Namespace) -> int:
    from tcplab import scenario

    print(json.dumps(scenario.json_schema(), indent=2, ensure_ascii=False))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    import trio

    from tcplab import scenario

    need_net_admin("verify")
    paths = [scenario.find(n) for n in args.names] if args.names else scenario.catalogue()
    loaded = [(p, load_scenario(str(p), "verify")) for p in paths]
    results: dict[str, tuple[list[str], float]] = {}
    total = len(loaded)

    async def one(path: Any, sc: Any, limiter: trio.CapacityLimiter) -> None:
        async with limiter:
            started = time.monotonic()
            proc = await trio.run_process(
                [*RUN_JSON, str(path), *(["--no-trace"] if args.no_trace else [])],
                env=child_env(),  # the runs die with verify
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )
            failures: list[str] = []
            done = None
            for raw in proc.stdout.splitlines():
                record = events.parse_record(raw)
                if isinstance(record, events.RunDone):
                    done = record
            if done is None:
                tail = proc.stderr.decode(errors="replace").strip().splitlines()[-3:]
                failures.append(
                    f"the run did not finish (exit {proc.returncode}): {' | '.join(tail)}"
                )
            else:
                failures = [*done.failures, *(f"causal order: {v}" for v in done.violations)]
            results[sc.name] = (failures, time.monotonic() - started)
            mark = "ok" if not failures else f"FAILED ({len(failures)})"
            print(f"[{len(results)}/{total}] {sc.name:<28} {mark}  {results[sc.name][1]:.1f} s",
                  flush=True)  # fmt: skip

    async def main() -> None:
        limiter = trio.CapacityLimiter(args.jobs)
        async with trio.open_nursery() as nursery:
            for path, sc in loaded:
                nursery.start_soon(one, path, sc, limiter)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        print("\ninterrupted; the labs were torn down", file=sys.stderr)
        return 130
    print()
    print(f"{'scenario':<28} {'result':<8} {'time':>7}")
    for _path, sc in loaded:
        failures, took = results.get(sc.name, (["not run"], 0.0))
        print(f"{sc.name:<28} {'ok' if not failures else 'FAILED':<8} {took:6.1f}s")
        for failure in failures:
            print(f"    ✗ {failure}")
    failed = sum(1 for f, _ in results.values() if f)
    print(f"\n{total - failed}/{total} scenarios held every expectation")
    return 0 if failed == 0 and len(results) == total else 1


def cmd_role(args: argparse.Namespace) -> int:
    from tcplab import roles, scenario

    try:
        return roles.run_role(args.role, args.scenario, args.pause, args.once)
    except (scenario.ScenarioError, RuntimeError, OSError) as exc:
        print(f"tcplab role {args.role}: {exc}", file=sys.stderr)
        return 1
