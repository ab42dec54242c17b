"""Watch the TCP state changes of every socket in one network namespace
(``python -m daemons.watch --netns NS``; ``tcplab watch`` runs this).

The same observer the daemons run, for sockets the lab did not make: a
server you brought, curl, a browser.  Each change is one ``tcp_state``
record, from the kernel's tracepoints where tracefs works (and the
namespace's addresses tell its sockets apart: tracepoints carry no
namespace) and from sock_diag polls always.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import trio

from core import netns, options
from core.tracefs import TRACE_PREFIX
from daemons import common
from daemons.matching import TraceConfig, port_filter, trace_filters
from daemons.observer import Observer
from daemons.options import WatchOptions


def parse_args(argv: list[str] | None) -> WatchOptions:
    return options.from_argv(
        WatchOptions,
        argv,
        prog="python -m daemons.watch",
        description="Print the TCP state changes of sockets in a network namespace.",
    )


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
    by_port = port_filter(args.port)
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
