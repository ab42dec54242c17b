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

WORDS = {
    "en": {
        "invalid": "(invalid: {why})",
        "faults": "faults: {rules}",
        "none": "none",
        "rules": "; ",
        "delay": " by {ms:g} ms",
        "pace": "pace: every segment {ms:g} ms late",
        "daemons": "server: {server}; client: {client}",
        "defaults": "defaults",
        "sysctls": "sysctls: {sysctls}",
        "run_it": "run it: tcplab run {name}",
    },
    "zh": {
        "invalid": "（无效：{why}）",
        "faults": "故障规则：{rules}",
        "none": "无",
        "rules": "；",
        "delay": "（延后 {ms:g} 毫秒）",
        "pace": "慢放：每个报文段延后 {ms:g} 毫秒",
        "daemons": "服务端：{server}；客户端：{client}",
        "defaults": "默认",
        "sysctls": "sysctl：{sysctls}",
        "run_it": "运行：tcplab run {name} --lang zh",
    },
}
"""What ``list`` and ``show`` say around a scenario's own words, by language."""


def _say(lang: str, key: str, **fields: object) -> str:
    return WORDS.get(lang, WORDS["en"])[key].format(**fields)


def cmd_list(args: argparse.Namespace) -> int:
    from tcplab import scenario

    lang = args.lang
    for path in scenario.catalogue():
        try:
            sc = scenario.load(path)
        except scenario.ScenarioError as exc:
            print(f"{path.stem:<28} {_say(lang, 'invalid', why=exc)}")
            continue
        print(f"{sc.name:<28} {sc.title_in(lang)}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    sc = load_scenario(args.name, "show")
    lang = args.lang
    print(f"{sc.name}: {sc.title_in(lang)}\n")
    print(sc.teaches_in(lang))
    print()
    breaks = [f"{r.action} {r.match.from_ + ':' if r.match.from_ else ''}{r.match.tag or 'any'}"
              + (f"@{','.join(map(str, sorted(r.match.nth)))}" if r.match.nth else "")
              + (f"#{r.match.conn}" if r.match.conn is not None else "")
              + (_say(lang, "delay", ms=r.delay * 1000) if r.delay else "")
              for r in sc.rules]  # fmt: skip
    print(_say(lang, "faults", rules=_say(lang, "rules").join(breaks) or _say(lang, "none")))
    if sc.pace:
        print(_say(lang, "pace", ms=sc.pace * 1000))
    defaults = _say(lang, "defaults")
    server, client = dict(sc.server) or defaults, dict(sc.client) or defaults
    print(_say(lang, "daemons", server=server, client=client))
    if sc.sysctls:
        print(_say(lang, "sysctls", sysctls=dict(sc.sysctls)))
    print()
    print(_say(lang, "run_it", name=sc.name))
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
    except (scenario.ScenarioError, RuntimeError, OSError, ValueError) as exc:
        print(f"tcplab role {args.role}: {exc}", file=sys.stderr)
        return 1
