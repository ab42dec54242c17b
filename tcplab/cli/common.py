"""What the commands share: argument types with their bounds, the usage
exit status, the fault options, and the root check."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from core import events, options
from core.units import duration_argument
from proxy.options import FAULTS, ProxyOptions
from tcplab import topology

EXIT_USAGE = 2
RUN_JSON = [sys.executable, "-m", "tcplab.cli", "run", "--json"]


MAX_DURATION_S = 2 * 3600.0


duration_arg = duration_argument(MAX_DURATION_S)
"""A duration up to two hours (``250ms``, ``2s``)."""


def sysctl_arg(text: str) -> tuple[topology.Side, str, str]:
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


def bounded_int(low: int, high: int) -> Any:
    """An argparse type: a whole number from ``low`` to ``high``."""

    def parse(text: str) -> int:
        if not text.strip().isdigit() or len(text.strip()) > 9:
            raise argparse.ArgumentTypeError(f"{text!r}: expected a whole number, {low} to {high}")
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value}: expected {low} to {high}")
        return value

    return parse


port_arg = bounded_int(1, 65535)
connections_arg = bounded_int(1, 100_000)
concurrency_arg = bounded_int(1, 10_000)
jobs_arg = bounded_int(1, 64)


def sysctl_map(items: list[tuple[topology.Side, str, str]]) -> dict[topology.Side, dict[str, str]]:
    out: dict[topology.Side, dict[str, str]] = {}
    for side, key, value in items:
        out.setdefault(side, {})[key] = value
    return out


def need_net_admin(what: str) -> None:
    from tcplab.runner import have_net_admin

    if not have_net_admin():
        print(
            f"tcplab {what}: needs root (CAP_NET_ADMIN, CAP_NET_RAW and CAP_SYS_ADMIN to create "
            "network namespaces); try: sudo tcplab " + what,
            file=sys.stderr,
        )
        raise SystemExit(EXIT_USAGE)


def faults_of(args: argparse.Namespace, command: str) -> ProxyOptions:
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


def given(args: argparse.Namespace, name: str) -> Any:
    """The option's value when the command line gave it, else None."""
    return getattr(args, name, None)


def value_of(args: argparse.Namespace, name: str) -> Any:
    value = given(args, name)
    return AD_HOC_DEFAULTS[name] if value is None else value


def json_line(record: events.Record) -> str:
    return json.dumps(events.to_fields(record), ensure_ascii=False)
