"""``tcplab`` — the command line.

tcplab run      build a lab, run one echo conversation, print every state change
tcplab lab up   build a lab and leave it up (lab down, lab exec, lab status)
tcplab proxy    change a running lab's faults (rules, add, rm, release, clear, pace)
tcplab watch    print the state changes of the sockets in any namespace
tcplab clean    remove what killed runs left behind
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
from typing import Any

from core import events, logs, netns, options
from core.proc import PARENT_ENV, child_env, die_with_parent
from core.units import duration_argument, format_duration
from proxy.options import FAULTS, ProxyOptions
from tcplab import causality, connview, topology

EXIT_USAGE = 2
RUN_JSON = [sys.executable, "-m", "tcplab.cli", "run", "--json"]


MAX_DURATION_S = 2 * 3600.0


_duration = duration_argument(MAX_DURATION_S)
"""A duration up to two hours (``250ms``, ``2s``)."""


def _sysctl(text: str) -> tuple[topology.Side, str, str]:
    """``cli:net.ipv4.tcp_fin_timeout=5`` → ("cli", key, "5"), checked as a
    scenario's sysctls are: a net.* key this kernel has, a plain value."""
    import re

    from tcplab.scenario import spec

    side, sep, rest = text.partition(":")
    key, eq, value = rest.partition("=")
    if not sep or not eq or side not in topology.SIDES:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected SIDE:KEY=VALUE with SIDE one of cli, mbx, srv"
        )
    try:
        topology.validate_sysctl_key(key)
    except topology.TopologyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if not re.fullmatch(spec.SYSCTL_KEY, key) or not spec.known_sysctl(key):
        raise argparse.ArgumentTypeError(f"{key!r}: no such sysctl on this kernel")
    if not re.fullmatch(spec.SYSCTL_VALUE, value):
        raise argparse.ArgumentTypeError(f"{key}={value!r}: expected a number, numbers or a name")
    return side, key, value


def _bounded_int(low: int, high: int) -> Any:
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        if not text.strip().isdigit() or len(text.strip()) > 9:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number, {low} to {high}")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value}: expected {low} to {high}")
        return value

    return parse


_port = _bounded_int(1, 65535)
_connections = _bounded_int(1, 100_000)
_concurrency = _bounded_int(1, 10_000)
_jobs = _bounded_int(1, 64)


def _sysctl_map(items: list[tuple[topology.Side, str, str]]) -> dict[topology.Side, dict[str, str]]:
    out: dict[topology.Side, dict[str, str]] = {}
    for side, key, value in items:
        out.setdefault(side, {})[key] = value
    return out


def _need_net_admin(what: str) -> None:
    from tcplab.runner import have_net_admin

    if not have_net_admin():
        print(
            f"tcplab {what}: needs root (CAP_NET_ADMIN, CAP_NET_RAW and CAP_SYS_ADMIN to create "
            "network namespaces); try: sudo tcplab " + what,
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE)


# --- run ---------------------------------------------------------------------


def _faults(args: argparse.Namespace, command: str) -> ProxyOptions:
    """The fault options (parsed, so checked, by argparse already): the
    proxy's rules and pace, nothing else set."""
    faults = options.from_namespace(ProxyOptions, args, only=FAULTS)
    if getattr(args, "forwarding", "proxy") == "kernel" and faults != ProxyOptions():
        print(
            f"tcplab {command}: faults need the proxy; drop --forwarding kernel",
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE)
    return faults


AD_HOC_DEFAULTS: dict[str, Any] = {
    "server_close": "immediate",
    "client_close": "active",
    "count": 1,
    "concurrency": 1,
    "port": 7007,
    "observe_for": 2.0,
    "log_segments": "all",
}
"""What an ad-hoc run uses for the options not given (their argparse
default is None, so that a scenario run can tell "given" from "default")."""


def _given(args: argparse.Namespace, name: str) -> Any:
    """The option's value when the command line gave it, else None."""
    return getattr(args, name, None)


def _value(args: argparse.Namespace, name: str) -> Any:
    value = _given(args, name)
    return AD_HOC_DEFAULTS[name] if value is None else value


def _json_line(record: events.Record) -> str:
    return json.dumps(events.to_fields(record), ensure_ascii=False)


def cmd_run(args: argparse.Namespace) -> int:
    if args.scenario:
        return cmd_run_scenario(args)
    _need_net_admin("run")
    from tcplab import runner, transcript

    faults = dataclasses.replace(
        _faults(args, "run"),
        log_segments=_value(args, "log_segments"),
        pcap=os.path.abspath(args.pcap) if args.pcap else None,
    )

    opts = runner.RunOptions(
        server_close=_value(args, "server_close"),
        client_close=_value(args, "client_close"),
        send=tuple(args.send or ["hello"]),
        count=_value(args, "count"),
        concurrency=_value(args, "concurrency"),
        ipv6=args.ipv6,
        port=_value(args, "port"),
        observe_for=_value(args, "observe_for"),
        farewell=args.farewell,
        sysctls=_sysctl_map(args.sysctl or []),
        forwarding=topology.Forwarding(args.forwarding or "proxy"),
        proxy=faults,
        trace=not args.no_trace,
    )
    out = sys.stdout
    state: dict[str, float] = {}

    def show(placed: causality.Placed) -> None:
        if args.json:
            out.write(_json_line(placed.record) + "\n")
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
    try:
        result = runner.run(opts, on_event=show)
    except KeyboardInterrupt:
        print("\ninterrupted; the lab was torn down", file=sys.stderr)
        return 130
    except topology.TopologyError as exc:
        print(f"tcplab run: {exc}", file=sys.stderr)
        return 1
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
            print(f"  ✗ causal order: {violation.describe()}", file=out)
        if args.pcap:
            print(f"capture: {args.pcap} (tshark -r {args.pcap})", file=out)
    ok = result.client_status == 0 and result.server_status == 0 and not result.timed_out
    return 0 if ok and not violations else 1


# --- scenarios -------------------------------------------------------------------


def _load_scenario(name: str, command: str) -> Any:
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

    faults = _faults(args, "run")
    opts = runner.scenario_options(sc, pace=faults.pace)
    # the scenario's rules first, then the ones given: where both match a
    # segment, the scenario's decides (proxy/rules.py: the first that fires)
    proxy = dataclasses.replace(
        opts.proxy,
        rules=opts.proxy.rules + faults.rules,
        log_segments=_given(args, "log_segments") or opts.proxy.log_segments,
        pcap=os.path.abspath(args.pcap) if args.pcap else None,
    )
    replace: dict[str, Any] = {"proxy": proxy, "trace": not args.no_trace}
    for name in ("server_close", "client_close", "count", "concurrency", "port", "observe_for"):
        if _given(args, name) is not None:
            replace[name] = _given(args, name)
    if args.send:
        replace["send"] = tuple(args.send)
    if args.farewell is not None:
        replace["farewell"] = args.farewell
    if args.ipv6:
        replace["ipv6"] = True
    sysctls: dict[topology.Side, dict[str, str]] = {
        side: dict(values) for side, values in sc.sysctls.items()
    }
    for side, values in _sysctl_map(args.sysctl or []).items():
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


def cmd_run_scenario(args: argparse.Namespace) -> int:
    from tcplab import runner, scenario, timeline

    sc = _load_scenario(args.scenario, "run")
    sc, opts, spec = scenario_run(args, sc)
    _need_net_admin("run")
    out = sys.stdout
    ladder = timeline.Ladder(lang=args.lang)
    if not args.json:
        print(f"{sc.name}: {sc.title}\n", file=out)
        for line in ladder.header():
            print(line, file=out)

    def show(placed: causality.Placed) -> None:
        if args.json:
            out.write(_json_line(placed.record) + "\n")
        else:
            for line in ladder.feed(placed):
                out.write(line + "\n")
        out.flush()

    try:
        result = runner.run(opts, on_event=show, spec=spec)
    except KeyboardInterrupt:
        print("\ninterrupted; the lab was torn down", file=sys.stderr)
        return 130
    except topology.TopologyError as exc:
        print(f"tcplab run: {exc}", file=sys.stderr)
        return 1
    if not args.json:
        for line in ladder.flush():
            print(line, file=out)
    statuses = {"client": result.client_status, "server": result.server_status}
    failures = scenario.check(sc, result.records, statuses)
    if result.timed_out:
        failures.insert(
            0, f"the run did not end within its deadline ({format_duration(opts.deadline)})"
        )
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
        out.write(_json_line(done) + "\n")
    else:
        print("", file=out)
        print(sc.teaches_zh if args.lang == "zh" else sc.teaches, file=out)
        print("", file=out)
        if failures:
            print(f"{len(failures)} expectation(s) not met:", file=out)
            for failure in failures:
                print(f"  ✗ {failure}", file=out)
        else:
            print("every expectation held ✓", file=out)
        for violation in violations:
            print(f"  ✗ causal order: {violation}", file=out)
    for line in result.stray:
        print(f"  ! {line}", file=sys.stderr)
    if args.html:
        explanation = sc.teaches_zh if args.lang == "zh" else sc.teaches
        page = timeline.render_html(
            result.records, title=f"{sc.name}: {sc.title}", explanation=explanation,
            failures=[*failures, *violations], lang=args.lang,
        )  # fmt: skip
        with open(args.html, "w", encoding="utf-8") as fh:
            fh.write(page)
        if not args.json:
            print(f"ladder diagram: {args.html}", file=out)
    return 0 if not failures and not violations else 1


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
    sc = _load_scenario(args.name, "show")
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

    _need_net_admin("verify")
    paths = [scenario.find(n) for n in args.names] if args.names else scenario.catalogue()
    loaded = [(p, _load_scenario(str(p), "verify")) for p in paths]
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


# --- lab -----------------------------------------------------------------------


def cmd_lab_up(args: argparse.Namespace) -> int:
    _need_net_admin("lab up")
    spec = topology.LabSpec(
        forwarding=topology.Forwarding(args.forwarding),
        sysctls=_sysctl_map(args.sysctl or []),
        persistent=True,
    )
    faults = _faults(args, "lab up")
    try:
        lab = topology.create(spec)
    except topology.TopologyError as exc:
        print(f"tcplab lab up: {exc}", file=sys.stderr)
        return 1
    if lab.forwarding is topology.Forwarding.PROXY:
        try:
            _start_background_proxy(lab, faults)
        except (OSError, TimeoutError) as exc:
            topology.destroy(lab.lab_id)
            print(f"tcplab lab up: the proxy did not start: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(lab.describe()))
        return 0
    d = lab.describe()
    print(f"lab {lab.lab_id} is up ({lab.forwarding.value} forwarding in the middle)\n")
    print(
        f"  client     {d['client']['netns']:<14} {topology.CLIENT_IF}  "
        f"{d['client']['ipv4']}/24  {d['client']['ipv6']}/64"
    )
    print(
        f"  middlebox  {d['middlebox']['netns']:<14} {topology.FRONT_IF}   "
        f"{d['middlebox']['front']['ipv4']}/24  {d['middlebox']['front']['ipv6']}/64"
    )
    print(
        f"  {'':<10} {'':<14} {topology.BACK_IF}   "
        f"{d['middlebox']['back']['ipv4']}/24  {d['middlebox']['back']['ipv6']}/64"
    )
    print(
        f"  server     {d['server']['netns']:<14} {topology.SERVER_IF} "
        f"{d['server']['ipv4']}/24  {d['server']['ipv6']}/64\n"
    )
    print("enter a side:")
    for side in topology.SIDES:
        print(f"  ip netns exec {lab.ns(side)} bash     # or: tcplab lab exec {side} -- bash")
    print("\ntry:")
    print("  tcplab lab exec srv -- python3 -m http.server 8000")
    print(f"  tcplab lab exec cli -- curl http://{lab.addr.server4}:8000/")
    print(f"  tcplab watch --netns {lab.ns('srv')} --port 8000")
    if lab.forwarding is topology.Forwarding.PROXY:
        print("\nthe middlebox is the proxy; change its faults while traffic flows:")
        print("  tcplab proxy add --drop syn-ack@1      # or --delay client:fin@1=2s, --hold …")
        print("  tcplab proxy rules                     # rules, counters, held segments")
        print("  tcplab proxy release                   # let held segments go")
        print(f"  its log (JSON lines): {_proxy_log(lab)}")
    print("\nremove it with: tcplab lab down")
    return 0


def _proxy_log(lab: topology.Lab) -> str:
    return str(topology.proxy_log_path(lab.lab_id))


def _start_background_proxy(lab: topology.Lab, faults: ProxyOptions) -> None:
    """The proxy for a lab that stays up: a process of its own (it lives in
    the middle namespace, so `lab down` and `clean` stop it with the rest),
    logging to a file; returns once its control socket answers."""
    import subprocess
    import time

    from core import control
    from tcplab import runner

    sock = runner.control_path(lab)
    proxy = dataclasses.replace(
        faults,
        netns=lab.ns("mbx"),
        log_format="json",
        front=topology.FRONT_IF,
        back=topology.BACK_IF,
        control=sock,
    )
    argv = runner.daemon_argv("proxy", proxy)
    with open(_proxy_log(lab), "ab") as log:
        env = dict(os.environ)
        env.pop(PARENT_ENV, None)  # it outlives us: `lab down` stops it
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    topology.update_record(lab.lab_id, proxy_pid=proc.pid, proxy_control=sock)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise OSError(f"it exited with status {proc.returncode}; see {_proxy_log(lab)}")
        try:
            if control.request(sock, {"op": "rules"}, timeout=1).get("ok"):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise TimeoutError(f"no answer on {sock} after 15 s")
        time.sleep(0.05)


# --- proxy -----------------------------------------------------------------------


def cmd_proxy(args: argparse.Namespace) -> int:
    from core import control, rules
    from tcplab import runner

    # Build (and so validate) the requests first: a malformed rule is named
    # whether or not a lab is up.
    requests: list[dict[str, Any]] = []
    if args.proxy_command == "rules":
        requests.append({"op": "rules"})
    elif args.proxy_command == "add":
        faults = options.from_namespace(ProxyOptions, args, only=FAULTS)
        for rule in faults.rules:
            requests.append({"op": "add", "action": rule.action, "rule": rules.format_rule(rule)})
        if faults.pace is not None:
            requests.append({"op": "pace", "value": format_duration(faults.pace)})
        if not faults.rules and faults.pace is None:
            print("tcplab proxy add: give a rule, e.g. --drop syn-ack@1", file=sys.stderr)
            return EXIT_USAGE
    elif args.proxy_command == "rm":
        requests.extend({"op": "rm", "name": name} for name in args.names)
    elif args.proxy_command == "release":
        requests.append({"op": "release", "rule": args.rule})
    elif args.proxy_command == "clear":
        requests.append({"op": "clear"})
    elif args.proxy_command == "pace":
        requests.append({"op": "pace", "value": args.value})
    path = args.socket or os.environ.get("TCPLAB_PROXY_SOCKET")
    lab_id = "the lab"
    if not path:
        try:
            lab = topology.find_lab(args.lab)
        except topology.TopologyError as exc:
            print(f"tcplab proxy: {exc}", file=sys.stderr)
            return 1
        path = runner.control_path(lab)
        lab_id = f"lab {lab.lab_id}"
    status = 0
    for payload in requests:
        try:
            answer = control.request(path, payload)
        except control.ProxyUnreachable as exc:
            hint = {
                "absent": f" (is {lab_id} running its proxy?)",
                "refused": " (its proxy has exited: `tcplab lab down`, then `lab up`)",
                "denied": " (run as root)",
            }.get(exc.why, "")
            print(f"tcplab proxy: {exc}{hint}", file=sys.stderr)
            return 1
        except OSError as exc:
            print(f"tcplab proxy: {exc}", file=sys.stderr)
            return 1
        if not answer.get("ok"):
            print(f"tcplab proxy {args.proxy_command}: {answer.get('error')}", file=sys.stderr)
            status = 1
            continue
        if args.json:
            print(json.dumps(answer))
        elif payload["op"] == "rules":
            _print_status(answer)
        elif payload["op"] == "add":
            print(f"added {answer['name']}")
        elif payload["op"] == "rm":
            print(f"removed {answer['name']}")
        elif payload["op"] == "release":
            print(f"released {answer['released']} frame(s)")
        elif payload["op"] == "pace":
            print(f"pace {answer['pace'] or 'off'}")
        else:
            print("ok")
    return status


def _print_status(answer: dict[str, Any]) -> None:
    rules = answer.get("rules", [])
    if not rules:
        print("no rules: every segment passes")
    for r in rules:
        print(
            f"  {r['name']:<28} {r['action']:<9} {r['rule']:<24} "
            f"matched {r['matched']}, fired {r['fired']}"
        )
    print(f"pace: {answer.get('pace') or 'off'}")
    held = answer.get("held") or {}
    if held:
        print("held: " + ", ".join(f"{n} by {rule}" for rule, n in held.items()))
    counters = answer.get("counters", {})
    shown = {k: v for k, v in counters.items() if v}
    print("counters: " + ", ".join(f"{k}={v}" for k, v in shown.items()))


def cmd_lab_down(args: argparse.Namespace) -> int:
    _need_net_admin("lab down")
    try:
        lab = topology.find_lab(args.lab)
    except topology.TopologyError as exc:
        print(f"tcplab lab down: {exc}", file=sys.stderr)
        return 1
    removed = topology.destroy(lab.lab_id)
    print(f"lab {lab.lab_id} removed ({', '.join(removed)})")
    return 0


def cmd_lab_exec(args: argparse.Namespace) -> int:
    _need_net_admin("lab exec")
    argv = list(args.command)
    # `lab exec srv --lab ID -- CMD`: options after the side land in argv
    while len(argv) >= 2 and argv[0] == "--lab":
        args.lab, argv = argv[1], argv[2:]
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("tcplab lab exec: give a command after --", file=sys.stderr)
        return EXIT_USAGE
    try:
        lab = topology.find_lab(args.lab)
    except topology.TopologyError as exc:
        print(f"tcplab lab exec: {exc}", file=sys.stderr)
        return 1
    return topology.exec_in(lab, args.side, argv)


def cmd_lab_status(args: argparse.Namespace) -> int:
    labs = topology.lab_namespaces()
    if not labs:
        print("no lab is up")
        return 0
    for lab_id, names in sorted(labs.items()):
        record = topology.read_record(lab_id) or {}
        kind = "lab up" if record.get("persistent") else f"run (pid {record.get('owner_pid')})"
        print(f"{lab_id}  {kind:<18} {' '.join(sorted(names))}")
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    _need_net_admin("clean")
    report = topology.clean(everything=args.all)
    for lab_id, names in report.removed.items():
        print(f"removed lab {lab_id}: {', '.join(names) or 'record only'}")
    for lab_id, why in report.kept.items():
        print(f"kept lab {lab_id}: {why}")
    if not report.removed and not report.kept:
        print("nothing to clean")
    return 0


# --- watch -----------------------------------------------------------------------


def cmd_watch(args: argparse.Namespace) -> int:
    """``python -m daemons.watch`` in this process's place (the observer
    lives with the daemons; the lab only starts it)."""
    try:
        netns.path_of(args.netns)
    except netns.NetnsError as exc:
        print(f"tcplab watch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not netns.exists(args.netns):
        print(f"tcplab watch: no network namespace {args.netns!r}", file=sys.stderr)
        return 1
    argv = [sys.executable, "-m", "daemons.watch", "--netns", args.netns]
    argv += [f"--port={port}" for port in args.port or []]
    argv += ["--interval", format_duration(args.interval), "--log-format", args.log_format]
    if args.duration:
        argv += ["--duration", format_duration(args.duration)]
    if args.no_trace:
        argv.append("--no-trace")
    sys.stdout.flush()
    os.execv(sys.executable, argv)


# --- parser --------------------------------------------------------------------------


def _add_fault_options(parser: argparse.ArgumentParser) -> None:
    """``--drop/--delay/--hold/--duplicate/--reset RULE`` and ``--pace D``,
    as the proxy takes them (:class:`proxy.options.ProxyOptions`)."""
    group = parser.add_argument_group(
        "faults (repeatable; TAG[@N[,N]][#CONN], from: client:/server:)"
    )
    options.add_arguments(group, ProxyOptions, only=FAULTS)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcplab",
        description="See and break the TCP handshake and teardown on real Linux kernels.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a scenario (NAME or FILE) as a ladder diagram, or one ad-hoc conversation",
    )
    run.add_argument("scenario", nargs="?", help="a catalogue name (tcplab list) or a .toml file")
    run.add_argument("--html", metavar="FILE", help="also write the ladder diagram as HTML")
    run.add_argument("--lang", choices=["en", "zh"], default="en", help="explanation language")
    run.add_argument(
        "--wait",
        action="store_true",
        help="scenario runs: observe until TIME_WAIT is over (60 s) instead of stopping early",
    )
    run.add_argument(
        "--server-close",
        default=None,
        metavar="POLICY",
        help="immediate (default) | linger:D | never | abort | first[:N] | half[:N]",
    )
    run.add_argument(
        "--client-close",
        default=None,
        metavar="POLICY",
        help="active (default) | shutdown | passive | abort | never",
    )
    run.add_argument("--send", action="append", metavar="TEXT", help="message (repeatable)")
    run.add_argument("--count", type=_connections, default=None, help="connections (default 1)")
    run.add_argument("--concurrency", type=_concurrency, default=None, help="at a time (default 1)")
    run.add_argument("--ipv6", action="store_true", help="talk over IPv6")
    run.add_argument("--port", type=_port, default=None, help="server port (default 7007)")
    run.add_argument("--farewell", metavar="TEXT", help="server sends TEXT from CLOSE_WAIT")
    run.add_argument(
        "--observe-for",
        type=_duration,
        default=None,
        metavar="D",
        help="keep observing this long after the conversation (default 2s; TIME_WAIT lasts 60s)",
    )
    run.add_argument(
        "--sysctl",
        action="append",
        type=_sysctl,
        metavar="SIDE:KEY=VALUE",
        help="per-namespace sysctl, e.g. cli:net.ipv4.tcp_fin_timeout=5",
    )
    run.add_argument("--json", action="store_true", help="print the merged event lines as JSON")
    run.add_argument(
        "--no-trace",
        action="store_true",
        help="observe by polling sock_diag only, as in containers (default: also the "
        "kernel's tracepoints, where tracefs can be used)",
    )
    run.add_argument(
        "--forwarding",
        choices=[m.value for m in topology.Forwarding],
        default=None,
        help="who forwards in the middle (default: the proxy; kernel = no faults)",
    )
    run.add_argument("--pcap", metavar="FILE", help="the proxy writes every frame to FILE (pcapng)")
    run.add_argument(
        "--log-segments",
        choices=["all", "control", "none"],
        default=None,
        help="which segments the proxy logs (control: handshake, teardown, resets, "
        "retransmits and any segment a rule touched)",
    )
    _add_fault_options(run)
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="the scenario catalogue")
    lst.set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="what a scenario teaches and what it breaks")
    show.add_argument("name")
    show.add_argument("--lang", choices=["en", "zh"], default="en")
    show.set_defaults(func=cmd_show)
    verify = sub.add_parser("verify", help="run scenarios and check every expectation")
    verify.add_argument("names", nargs="*", help="scenarios (default: the whole catalogue)")
    verify.add_argument("--jobs", type=_jobs, default=1, help="scenarios at a time (own labs)")
    verify.add_argument(
        "--no-trace", action="store_true", help="poll sock_diag only (as in containers)"
    )
    verify.set_defaults(func=cmd_verify)
    role = sub.add_parser(
        "role", help="be one side of the lab in a container (compose.yaml): server, proxy, client"
    )
    role.add_argument("role", choices=["server", "proxy", "client"])
    role.add_argument(
        "--scenario",
        default=os.environ.get("SCENARIO", "tour"),
        help="scenario name(s), comma-separated, or tour (default: $SCENARIO, else tour)",
    )
    role.add_argument("--pause", type=_duration, default=_duration("5s"), metavar="D")
    role.add_argument("--once", action="store_true", help="client: one round, then exit")
    role.set_defaults(func=cmd_role)
    schema = sub.add_parser("schema", help="print the JSON Schema of scenario files")
    schema.set_defaults(func=cmd_schema)

    lab = sub.add_parser("lab", help="a lab that stays up: up, down, exec, status")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True, metavar="ACTION")
    up = lab_sub.add_parser("up", help="build a lab and leave it up")
    up.add_argument(
        "--forwarding",
        choices=[m.value for m in topology.Forwarding],
        default="proxy",
        help="proxy (default): the middlebox forwards and can inject faults; "
        "kernel: plain IP forwarding",
    )
    _add_fault_options(up)
    up.add_argument("--sysctl", action="append", type=_sysctl, metavar="SIDE:KEY=VALUE")
    up.add_argument("--json", action="store_true", help="print names and addresses as JSON")
    up.set_defaults(func=cmd_lab_up)
    down = lab_sub.add_parser("down", help="remove a lab made by `lab up`")
    down.add_argument("--lab", metavar="ID", help="which lab (default: the only one)")
    down.set_defaults(func=cmd_lab_down)
    ex = lab_sub.add_parser("exec", help="run a command in one side of the lab")
    ex.add_argument("side", choices=topology.SIDES)
    ex.add_argument("--lab", metavar="ID")
    ex.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARGS...]")
    ex.set_defaults(func=cmd_lab_exec)
    status = lab_sub.add_parser("status", help="list labs that are up")
    status.set_defaults(func=cmd_lab_status)

    clean = sub.add_parser("clean", help="remove labs left behind by killed runs")
    clean.add_argument(
        "--all",
        action="store_true",
        help="also remove labs made by `lab up` and labs of running processes",
    )
    clean.set_defaults(func=cmd_clean)

    proxy = sub.add_parser("proxy", help="change a running lab's faults: rules, add, rm, release")
    proxy_sub = proxy.add_subparsers(dest="proxy_command", required=True, metavar="ACTION")
    p_rules = proxy_sub.add_parser("rules", help="rules, pace, counters, held segments")
    p_add = proxy_sub.add_parser("add", help="add rules: --drop syn-ack@1, --delay fin@1=2s …")
    _add_fault_options(p_add)
    p_rm = proxy_sub.add_parser("rm", help="remove rules by name")
    p_rm.add_argument("names", nargs="+", metavar="NAME")
    p_release = proxy_sub.add_parser("release", help="let held segments go")
    p_release.add_argument("rule", nargs="?", help="only those held by this rule")
    p_clear = proxy_sub.add_parser("clear", help="remove every rule")
    p_pace = proxy_sub.add_parser("pace", help="delay every segment (slow motion)")
    p_pace.add_argument("value", help="a duration (250ms), or off")
    for p in (p_rules, p_add, p_rm, p_release, p_clear, p_pace):
        p.add_argument("--lab", metavar="ID", help="which lab (default: the only one)")
        p.add_argument(
            "--socket",
            metavar="PATH",
            help="the proxy's control socket (default: $TCPLAB_PROXY_SOCKET, else the lab's)",
        )
        p.add_argument("--json", action="store_true", help="print the proxy's answers as JSON")
        p.set_defaults(func=cmd_proxy)

    watch = sub.add_parser("watch", help="print TCP state changes of sockets in a namespace")
    watch.add_argument("--netns", required=True, help="network namespace to watch")
    watch.add_argument("--port", type=_port, action="append", help="only sockets with this port")
    watch.add_argument("--interval", type=_duration, default=_duration("5ms"), metavar="D")
    watch.add_argument(
        "--duration",
        type=_duration,
        default=None,
        metavar="D",
        help="stop after D (default: until Ctrl-C)",
    )
    watch.add_argument("--log-format", choices=logs.FORMATS, default="auto")
    watch.add_argument(
        "--no-trace",
        action="store_true",
        help="poll sock_diag only (default: also the kernel's tracepoints, where tracefs works)",
    )
    watch.set_defaults(func=cmd_watch)
    return parser


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def reap_orphans() -> None:
    """Remove the labs of runs that were killed (their owning process is
    gone), saying so: every command does this first, so a laptop that
    crashed during a class leaves nothing behind once ``tcplab`` runs again.
    Labs made by ``lab up`` stay until ``lab down``."""
    from tcplab.runner import have_net_admin

    if not have_net_admin():
        return
    try:
        report = topology.clean(everything=False)
    except OSError as exc:
        print(f"tcplab: could not look for labs of killed runs: {exc}", file=sys.stderr)
        return
    for lab_id, names in report.removed.items():
        what = ", ".join(names) or "its record"
        print(f"tcplab: removed lab {lab_id}, left by a run that is gone ({what})", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    die_with_parent(signal.SIGTERM)  # a run started by `verify`: tear its lab down
    parser = build_parser()
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM both tear the lab down — even when started from a
    # shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.func is not cmd_clean:
            reap_orphans()
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
