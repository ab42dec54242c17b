"""``tcplab proxy rules|add|rm|release|clear|pace``: a client of a running
proxy's control socket."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from core import options
from core.units import format_duration
from proxy.options import FAULTS, ProxyOptions
from tcplab import topology
from tcplab.cli.common import EXIT_USAGE


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
