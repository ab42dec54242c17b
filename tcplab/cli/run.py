"""``tcplab run``: one ad-hoc conversation, or a scenario, as a live
transcript and a ladder."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import TYPE_CHECKING, Any

from core import events
from core.units import format_duration
from proxy.options import ProxyOptions
from tcplab import causality, connview, topology

if TYPE_CHECKING:
    from tcplab.runner import RunResult

from tcplab.cli.common import (
    EXIT_USAGE,
    faults_of,
    given,
    json_line,
    need_net_admin,
    sysctl_map,
    value_of,
)


def _run(opts: Any, show: Any, spec: topology.LabSpec | None = None) -> RunResult | int:
    """The run, or the exit status when it could not happen (Ctrl-C: 130;
    a lab that could not be built: 1, saying why)."""
    from tcplab import runner

    try:
        return runner.run(opts, on_event=show, spec=spec)
    except KeyboardInterrupt:
        print("\ninterrupted; the lab was torn down", file=sys.stderr)
        return 130
    except topology.TopologyError as exc:
        print(f"tcplab run: {exc}", file=sys.stderr)
        return 1


def cmd_run(args: argparse.Namespace) -> int:
    if args.board:
        return _run_on_board(args)
    if args.scenario:
        return cmd_run_scenario(args)
    need_net_admin("run")
    from tcplab import runner, transcript
    from tcplab.scenario.check import say

    faults = dataclasses.replace(
        faults_of(args, "run"),
        log_segments=value_of(args, "log_segments"),
        pcap=os.path.abspath(args.pcap) if args.pcap else None,
    )

    opts = runner.RunOptions(
        server_close=value_of(args, "server_close"),
        client_close=value_of(args, "client_close"),
        send=tuple(args.send or ["hello"]),
        count=value_of(args, "count"),
        concurrency=value_of(args, "concurrency"),
        ipv6=args.ipv6,
        port=value_of(args, "port"),
        observe_for=value_of(args, "observe_for"),
        farewell=args.farewell,
        sysctls=sysctl_map(args.sysctl or []),
        forwarding=topology.Forwarding(args.forwarding or "proxy"),
        proxy=faults,
        trace=not args.no_trace,
    )
    out = sys.stdout
    state: dict[str, float] = {}

    def show(placed: causality.Placed) -> None:
        if args.json:
            out.write(json_line(placed.record) + "\n")
            out.flush()
            return
        t0 = state.setdefault("t0", causality.position(placed.record))
        out.write(transcript.format_line(placed, t0) + "\n")
        out.flush()

    if not args.json:
        print(
            f"tcplab: server close={opts.server_close}, client close={opts.client_close}, "
            f"{opts.count} connection(s); times are relative to the first event",
            file=out,
        )
    result = _run(opts, show)
    if isinstance(result, int):
        return result
    for line in result.stray:
        print(f"  ! {line}", file=sys.stderr)
    violations = causality.check(result.records)
    if not args.json:
        print(
            f"lab {result.lab_id} torn down; client exit {result.client_status}, "
            f"server exit {result.server_status}",
            file=out,
        )
        for violation in violations:
            print(f"  ✗ {say(args.lang, 'causal', violation=violation.describe())}", file=out)
        if args.pcap:
            print(f"capture: {args.pcap} (tshark -r {args.pcap})", file=out)
    ok = result.client_status == 0 and result.server_status == 0 and not result.timed_out
    return 0 if ok and not violations else 1


def _run_on_board(args: argparse.Namespace) -> int:
    """``run NAME --board``: the board runs it (and stays up for more)."""
    from tcplab.cli.board import cmd_board

    if not args.scenario:
        print("tcplab run --board: name a scenario (tcplab list)", file=sys.stderr)
        return EXIT_USAGE
    load_scenario(args.scenario, "run")  # named now, not later on a page
    board = argparse.Namespace(
        listen=args.listen,
        allow_remote=args.allow_remote,
        scenarios=[args.scenario],
        lang=args.lang,
        lab=None,
        events_socket=None,
        control=None,
        quiet=False,
        faults=faults_of(args, "run"),
    )
    return cmd_board(board)


def load_scenario(name: str, command: str) -> Any:
    from tcplab import scenario

    try:
        return scenario.load(scenario.find(name))
    except scenario.ScenarioError as exc:
        print(f"tcplab {command}: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def scenario_run(args: argparse.Namespace, sc: Any) -> tuple[Any, Any, topology.LabSpec]:
    """The scenario, run options and lab a ``run SCENARIO`` asks for: the
    scenario's own, with every option given on the command line taking its
    place (faults are added to the scenario's; sysctls override it key by
    key).  Raises SystemExit(2) with a message for an option that cannot
    apply."""
    from tcplab import runner

    faults = faults_of(args, "run")
    opts = runner.scenario_options(sc, pace=faults.pace)
    # the scenario's rules first, then the ones given: where both match a
    # segment, the scenario's decides (proxy/rules.py: the first that fires)
    proxy = dataclasses.replace(
        opts.proxy,
        rules=opts.proxy.rules + faults.rules,
        log_segments=given(args, "log_segments") or opts.proxy.log_segments,
        pcap=os.path.abspath(args.pcap) if args.pcap else None,
    )
    replace: dict[str, Any] = {"proxy": proxy, "trace": not args.no_trace}
    for name in ("server_close", "client_close", "count", "concurrency", "port", "observe_for"):
        if given(args, name) is not None:
            replace[name] = given(args, name)
    if args.send:
        replace["send"] = tuple(args.send)
    if args.farewell is not None:
        replace["farewell"] = args.farewell
    if args.ipv6:
        replace["ipv6"] = True
    sysctls: dict[topology.Side, dict[str, str]] = {
        side: dict(values) for side, values in sc.sysctls.items()
    }
    for side, values in sysctl_map(args.sysctl or []).items():
        sysctls.setdefault(side, {}).update(values)
    replace["sysctls"] = sysctls
    if args.forwarding == "kernel":
        if sc.rules or sc.pace or faults != ProxyOptions():
            print(
                f"tcplab run: {sc.name} needs the proxy for its faults; drop --forwarding kernel",
                file=sys.stderr,
            )
            raise SystemExit(EXIT_USAGE)
        replace["forwarding"] = topology.Forwarding.KERNEL
    opts = dataclasses.replace(opts, **replace)
    if args.wait:
        # TIME_WAIT is TCP_TIMEWAIT_LEN, 60 s: observe until it is over; what
        # the scenario expects to be left at the end no longer applies
        sc = dataclasses.replace(
            sc,
            expect_client=dataclasses.replace(sc.expect_client, final=None),
            expect_server=dataclasses.replace(sc.expect_server, final=None),
        )
        opts = dataclasses.replace(
            opts, observe_for=65.0, deadline=max(opts.deadline, 65.0 + sc.deadline)
        )
    spec = topology.LabSpec(forwarding=opts.forwarding, sysctls=opts.sysctls)
    return sc, opts, spec


LADDER_FILE = {"en": "ladder diagram: {path}", "zh": "梯形图：{path}"}
"""Where ``--html`` wrote the page, in each language."""


def cmd_run_scenario(args: argparse.Namespace) -> int:
    from tcplab import timeline
    from tcplab.scenario.check import check, outcome, say

    sc = load_scenario(args.scenario, "run")
    sc, opts, spec = scenario_run(args, sc)
    need_net_admin("run")
    out = sys.stdout
    ladder = timeline.Ladder(lang=args.lang)
    if not args.json:
        print(f"{sc.name}: {sc.title_in(args.lang)}\n", file=out)
        for line in ladder.header():
            print(line, file=out)

    def show(placed: causality.Placed) -> None:
        if args.json:
            out.write(json_line(placed.record) + "\n")
        else:
            for line in ladder.feed(placed):
                out.write(line + "\n")
        out.flush()

    result = _run(opts, show, spec)
    if isinstance(result, int):
        return result
    if not args.json:
        for line in ladder.flush():
            print(line, file=out)
    statuses = {"client": result.client_status, "server": result.server_status}
    # English for the machine-readable record, and in the language asked for
    failures = check(sc, result.records, statuses)
    shown = check(sc, result.records, statuses, args.lang)
    if result.timed_out:
        deadline = format_duration(opts.deadline)
        failures.insert(0, say("en", "deadline_of", deadline=deadline))
        shown.insert(0, say(args.lang, "deadline_of", deadline=deadline))
    t0 = connview.time_zero(result.records)
    violations = [v.describe(t0) for v in causality.check(result.records)]
    if args.json:
        done = events.RunDone(
            ts=time.time(),
            component="runner",
            scenario=sc.name,
            client_status=result.client_status,
            server_status=result.server_status,
            proxy_status=result.proxy_status,
            failures=tuple(failures),
            violations=tuple(violations),
        )
        out.write(json_line(done) + "\n")
    else:
        print("", file=out)
        print(sc.teaches_in(args.lang), file=out)
        print("", file=out)
        for line in outcome(shown, violations, args.lang):
            print(line, file=out)
    for line in result.stray:
        print(f"  ! {line}", file=sys.stderr)
    if args.html:
        page = timeline.render_html(
            result.records, title=f"{sc.name}: {sc.title_in(args.lang)}",
            explanation=sc.teaches_in(args.lang), failures=[*shown, *violations], lang=args.lang,
        )  # fmt: skip
        with open(args.html, "w", encoding="utf-8") as fh:
            fh.write(page)
        if not args.json:
            print(LADDER_FILE.get(args.lang, LADDER_FILE["en"]).format(path=args.html), file=out)
    return 0 if not failures and not violations else 1
