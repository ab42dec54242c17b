"""Watch the TCP state changes of every socket in one network namespace
(``python -m daemons.watch --netns NS``; ``tcplab watch`` runs this).

The same observer the daemons run, for sockets the lab did not make: a
server you brought, curl, a browser.  Each change is one ``tcp_state``
record, from the kernel's tracepoints where tracefs works (and the
namespace's addresses tell its sockets apart: tracepoints carry no
namespace) and from sock_diag polls always.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

import trio

from core import logs, netns
from core.tracefs import TRACE_PREFIX
from core.units import duration_argument
from daemons import common
from daemons.observer import Observer, TraceConfig, port_filter, trace_filters

MAX_DURATION_S = 2 * 3600.0
"""Longest ``--duration`` or ``--interval`` accepted (two hours)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m daemons.watch",
        description="Print the TCP state changes of sockets in a network namespace.",
    )
    parser.add_argument("--netns", required=True, help="network namespace to watch")
    parser.add_argument(
        "--port", type=common.port, action="append", help="only sockets with this port"
    )
    parser.add_argument(
        "--interval",
        type=duration_argument(MAX_DURATION_S),
        default=0.005,
        metavar="D",
        help="how often to poll sock_diag (default 5ms)",
    )
    parser.add_argument(
        "--duration",
        type=duration_argument(MAX_DURATION_S),
        default=None,
        metavar="D",
        help="stop after D (default: until Ctrl-C)",
    )
    parser.add_argument("--log-format", choices=logs.FORMATS, default="auto")
    parser.add_argument(
        "--no-trace",
        action="store_true",
        help="poll sock_diag only (default: also the kernel's tracepoints, where tracefs works)",
    )
    return parser.parse_args(argv)


def own_addresses() -> frozenset[str]:
    """The addresses configured in the current namespace (loopback's left out)."""
    from pyroute2 import IPRoute

    with IPRoute() as ip:
        found = [msg.get_attr("IFA_ADDRESS") for msg in ip.get_addr()]
    return frozenset(a for a in found if a and not a.startswith("127.") and a != "::1")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not netns.exists(args.netns):
        print(f"watch: no network namespace {args.netns!r}", file=sys.stderr)
        return 1
    log = common.setup("watch", args)
    by_port = port_filter(args.port or [])
    match: Callable[[common.Key], bool] = by_port
    trace: TraceConfig | None = None
    if not args.no_trace:
        # tracepoints see every namespace: keep the sockets on this one's addresses
        own = own_addresses()
        v4 = sorted(a for a in own if ":" not in a)
        trace = TraceConfig(
            f"{TRACE_PREFIX}watch-{os.getpid()}", trace_filters(v4[0] if len(v4) == 1 else None)
        )

        def match(key: common.Key) -> bool:
            return key[0] in own and by_port(key)

    async def watch() -> None:
        observer = Observer(
            log, match=match, interval=args.interval, vouched=False, netns=None, trace=trace
        )
        with trio.move_on_after(args.duration if args.duration else float("inf")):
            await observer.run()

    try:
        trio.run(watch)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
