"""The ``tcplab`` argument parser: every command, its options and their
help (declarative)."""

from __future__ import annotations

import argparse
import os

from core import logs, options
from proxy.options import FAULTS, ProxyOptions
from tcplab import topology
from tcplab.cli.board import add_board_options, cmd_board
from tcplab.cli.catalogue import cmd_list, cmd_role, cmd_schema, cmd_show, cmd_verify
from tcplab.cli.common import (
    concurrency_arg,
    connections_arg,
    duration_arg,
    jobs_arg,
    port_arg,
    sysctl_arg,
)
from tcplab.cli.lab import cmd_clean, cmd_lab_down, cmd_lab_exec, cmd_lab_status, cmd_lab_up
from tcplab.cli.proxyctl import cmd_proxy
from tcplab.cli.run import cmd_run
from tcplab.cli.watch import cmd_watch


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
    run.add_argument("--count", type=connections_arg, default=None, help="connections (default 1)")
    run.add_argument(
        "--concurrency", type=concurrency_arg, default=None, help="at a time (default 1)"
    )
    run.add_argument("--ipv6", action="store_true", help="talk over IPv6")
    run.add_argument("--port", type=port_arg, default=None, help="server port (default 7007)")
    run.add_argument("--farewell", metavar="TEXT", help="server sends TEXT from CLOSE_WAIT")
    run.add_argument(
        "--observe-for",
        type=duration_arg,
        default=None,
        metavar="D",
        help="keep observing this long after the conversation (default 2s; TIME_WAIT lasts 60s)",
    )
    run.add_argument(
        "--sysctl",
        action="append",
        type=sysctl_arg,
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
    run.add_argument(
        "--board",
        action="store_true",
        help="show it live in the browser (tcplab board); the board stays up after the run",
    )
    add_board_options(run, full=False)
    _add_fault_options(run)
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="the scenario catalogue")
    lst.add_argument("--lang", choices=["en", "zh"], default="en", help="title language")
    lst.set_defaults(func=cmd_list)
    show = sub.add_parser("show", help="what a scenario teaches and what it breaks")
    show.add_argument("name")
    show.add_argument("--lang", choices=["en", "zh"], default="en")
    show.set_defaults(func=cmd_show)
    verify = sub.add_parser("verify", help="run scenarios and check every expectation")
    verify.add_argument("names", nargs="*", help="scenarios (default: the whole catalogue)")
    verify.add_argument("--jobs", type=jobs_arg, default=1, help="scenarios at a time (own labs)")
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
    role.add_argument("--pause", type=duration_arg, default=duration_arg("5s"), metavar="D")
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
    up.add_argument(
        "--log-segments",
        choices=["all", "control", "none"],
        default="control",
        help="control (default): the handshake, teardown, resets, retransmits and every "
        "segment a rule touches are logged, the rest counted, and established connections "
        "no rule needs are forwarded by the middlebox's kernel (the express lane); all: "
        "every segment through the proxy and logged, at a few percent of the kernel's speed",
    )
    up.add_argument("--sysctl", action="append", type=sysctl_arg, metavar="SIDE:KEY=VALUE")
    up.add_argument("--json", action="store_true", help="print names and addresses as JSON")
    up.add_argument(
        "--board",
        action="store_true",
        help="then serve the live page for it (Ctrl-C stops the board; the lab stays up)",
    )
    add_board_options(up, full=False)
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

    board = sub.add_parser(
        "board", help="the live ladder in a browser, with faults at a click and an HTTP API"
    )
    add_board_options(board, full=True)
    board.set_defaults(func=cmd_board)

    watch = sub.add_parser("watch", help="print TCP state changes of sockets in a namespace")
    watch.add_argument("--netns", required=True, help="network namespace to watch")
    watch.add_argument("--port", type=port_arg, action="append", help="only sockets with this port")
    watch.add_argument("--interval", type=duration_arg, default=duration_arg("5ms"), metavar="D")
    watch.add_argument(
        "--duration",
        type=duration_arg,
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
