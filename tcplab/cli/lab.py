"""``tcplab lab up|down|exec|status`` and ``tcplab clean``: a lab that stays
up, its background proxy, and removing what runs left."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

from core.proc import PARENT_ENV
from proxy.options import LogSegments, ProxyOptions
from tcplab import topology
from tcplab.cli.common import EXIT_USAGE, faults_of, need_net_admin, sysctl_map


def cmd_lab_up(args: argparse.Namespace) -> int:
    need_net_admin("lab up")
    spec = topology.LabSpec(
        forwarding=topology.Forwarding(args.forwarding),
        sysctls=sysctl_map(args.sysctl or []),
        persistent=True,
    )
    faults = faults_of(args, "lab up")
    try:
        lab = topology.create(spec)
    except topology.TopologyError as exc:
        print(f"tcplab lab up: {exc}", file=sys.stderr)
        return 1
    if lab.forwarding is topology.Forwarding.PROXY:
        try:
            _start_background_proxy(lab, faults, getattr(args, "log_segments", "control"))
        except (OSError, TimeoutError) as exc:
            topology.destroy(lab.lab_id)
            print(f"tcplab lab up: the proxy did not start: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps(lab.describe()))
        return 0 if not args.board else _board_for(lab, args)
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
    return 0 if not args.board else _board_for(lab, args)


def _board_for(lab: topology.Lab, args: argparse.Namespace) -> int:
    """``lab up --board``: the board for the lab just made (it stays up after)."""
    from tcplab.cli.board import cmd_board

    print("")
    board = argparse.Namespace(
        listen=args.listen, allow_remote=args.allow_remote, scenarios=[], lang="en",
        lab=lab.lab_id, events_socket=None, control=None, quiet=False,
    )  # fmt: skip
    return cmd_board(board)


def _proxy_log(lab: topology.Lab) -> str:
    return str(topology.proxy_log_path(lab.lab_id))


def _start_background_proxy(
    lab: topology.Lab, faults: ProxyOptions, log_segments: LogSegments = "control"
) -> None:
    """The proxy for a lab that stays up: a process of its own (it lives in
    the middle namespace, so `lab down` and `clean` stop it with the rest),
    logging to a file; returns once its control socket answers.  By default
    it logs the segments that make the picture (``control``) and lets the
    kernel forward established connections no rule needs, so a program
    brought into the lab runs near the speed it would without it."""
    import subprocess

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
        log_segments=log_segments,
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


def cmd_lab_down(args: argparse.Namespace) -> int:
    need_net_admin("lab down")
    try:
        lab = topology.find_lab(args.lab)
    except topology.TopologyError as exc:
        print(f"tcplab lab down: {exc}", file=sys.stderr)
        return 1
    removed = topology.destroy(lab.lab_id)
    print(f"lab {lab.lab_id} removed ({', '.join(removed)})")
    return 0


def cmd_lab_exec(args: argparse.Namespace) -> int:
    need_net_admin("lab exec")
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
    need_net_admin("clean")
    report = topology.clean(everything=args.all)
    for lab_id, names in report.removed.items():
        print(f"removed lab {lab_id}: {', '.join(names) or 'record only'}")
    for lab_id, why in report.kept.items():
        print(f"kept lab {lab_id}: {why}")
    if not report.removed and not report.kept:
        print("nothing to clean")
    return 0
