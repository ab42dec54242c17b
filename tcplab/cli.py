"""``tcplab`` — the command line.

tcplab run      build a lab, run one echo conversation, print every state change
tcplab lab up   build a lab and leave it up (lab down, lab exec, lab status)
tcplab watch    print the state changes of the sockets in any namespace
tcplab clean    remove what killed runs left behind
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from tcplab import logs, topology
from tcplab.units import parse_duration

EXIT_USAGE = 2


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sysctl(text: str) -> tuple[topology.Side, str, str]:
    """``cli:net.ipv4.tcp_fin_timeout=5`` → ("cli", key, "5")."""
    side, sep, rest = text.partition(":")
    key, eq, value = rest.partition("=")
    if not sep or not eq or side not in topology.SIDES:
        raise argparse.ArgumentTypeError(
            f"--sysctl {text!r}: expected SIDE:KEY=VALUE with SIDE one of cli, mbx, srv"
        )
    try:
        topology.validate_sysctl_key(key)
    except topology.TopologyError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return side, key, value


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


def cmd_run(args: argparse.Namespace) -> int:
    _need_net_admin("run")
    from tcplab import runner, transcript

    opts = runner.RunOptions(
        server_close=args.server_close,
        client_close=args.client_close,
        send=tuple(args.send or ["hello"]),
        count=args.count,
        concurrency=args.concurrency,
        ipv6=args.ipv6,
        port=args.port,
        observe_for=args.observe_for,
        farewell=args.farewell,
        sysctls=_sysctl_map(args.sysctl or []),
    )
    out = sys.stdout
    state: dict[str, Any] = {"t0": None}

    def show(event: dict[str, Any]) -> None:
        if args.json:
            out.write(json.dumps(event) + "\n")
            out.flush()
            return
        if state["t0"] is None:
            state["t0"] = float(event["ts"])
        out.write(transcript.format_line(event, state["t0"]) + "\n")
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
    if not args.json:
        print(
            f"lab {result.lab_id} torn down; client exit {result.client_status}, "
            f"server exit {result.server_status}",
            file=out,
        )
    return 0 if result.client_status == 0 and result.server_status == 0 else 1


# --- lab -----------------------------------------------------------------------


def cmd_lab_up(args: argparse.Namespace) -> int:
    _need_net_admin("lab up")
    spec = topology.LabSpec(
        forwarding=topology.Forwarding(args.forwarding),
        sysctls=_sysctl_map(args.sysctl or []),
        persistent=True,
    )
    try:
        lab = topology.create(spec)
    except topology.TopologyError as exc:
        print(f"tcplab lab up: {exc}", file=sys.stderr)
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
    print(f"  tcplab lab exec srv -- python3 -m http.server 8000 --bind {lab.addr.server4}")
    print(f"  tcplab lab exec cli -- curl http://{lab.addr.server4}:8000/")
    print(f"  tcplab watch --netns {lab.ns('srv')} --port 8000")
    print("\nremove it with: tcplab lab down")
    return 0


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
    import trio

    from daemons.observer import Observer, port_filter

    if not os.path.exists(f"/run/netns/{args.netns}"):
        print(f"tcplab watch: no network namespace {args.netns!r}", file=sys.stderr)
        return 1
    logs.configure("watch", args.log_format)
    log = logs.get_logger()

    async def main() -> None:
        observer = Observer(
            log,
            match=port_filter(args.port or []),
            interval=args.interval,
            vouched=False,
            netns=args.netns,
        )
        with trio.move_on_after(args.duration if args.duration else float("inf")):
            await observer.run()

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 0
    return 0


# --- parser --------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcplab",
        description="See and break the TCP handshake and teardown on real Linux kernels.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="build a lab, run one conversation, print every state change")
    run.add_argument(
        "--server-close",
        default="immediate",
        metavar="POLICY",
        help="immediate | linger:D | never | abort | first[:N] | half[:N]",
    )
    run.add_argument(
        "--client-close",
        default="active",
        metavar="POLICY",
        help="active | shutdown | passive | abort | never",
    )
    run.add_argument("--send", action="append", metavar="TEXT", help="message (repeatable)")
    run.add_argument("--count", type=int, default=1, help="connections (default 1)")
    run.add_argument("--concurrency", type=int, default=1)
    run.add_argument("--ipv6", action="store_true", help="talk over IPv6")
    run.add_argument("--port", type=int, default=7007)
    run.add_argument("--farewell", metavar="TEXT", help="server sends TEXT from CLOSE_WAIT")
    run.add_argument(
        "--observe-for",
        type=_duration,
        default=_duration("2s"),
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
    run.set_defaults(func=cmd_run)

    lab = sub.add_parser("lab", help="a lab that stays up: up, down, exec, status")
    lab_sub = lab.add_subparsers(dest="lab_command", required=True, metavar="ACTION")
    up = lab_sub.add_parser("up", help="build a lab and leave it up")
    up.add_argument(
        "--forwarding", choices=[m.value for m in topology.Forwarding], default="kernel"
    )
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

    watch = sub.add_parser("watch", help="print TCP state changes of sockets in a namespace")
    watch.add_argument("--netns", required=True, help="network namespace to watch")
    watch.add_argument("--port", type=int, action="append", help="only sockets with this port")
    watch.add_argument("--interval", type=_duration, default=_duration("5ms"), metavar="D")
    watch.add_argument(
        "--duration",
        type=_duration,
        default=None,
        metavar="D",
        help="stop after D (default: until Ctrl-C)",
    )
    watch.add_argument("--log-format", choices=logs.FORMATS, default="auto")
    watch.set_defaults(func=cmd_watch)
    return parser


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Ctrl-C and SIGTERM both tear the lab down — even when started from a
    # shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
