"""``tcplab`` — the command line.

tcplab run      build a lab, run one echo conversation, print every state change
tcplab lab up   build a lab and leave it up (lab down, lab exec, lab status)
tcplab proxy    change a running lab's faults (rules, add, rm, release, clear, pace)
tcplab watch    print the state changes of the sockets in any namespace
tcplab clean    remove what killed runs left behind
"""

from __future__ import annotations

import os
import signal
import sys

from core.proc import die_with_parent
from tcplab import topology
from tcplab.cli.common import EXIT_USAGE
from tcplab.cli.lab import cmd_clean
from tcplab.cli.parser import build_parser
from tcplab.cli.run import scenario_run

__all__ = ["EXIT_USAGE", "build_parser", "main", "scenario_run"]


_MAIN_PID = os.getpid()


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM: unwind as Ctrl-C does, so the lab is torn down.  In a child this
    process forked (pyroute2 forks one into a namespace) the handler is
    inherited, but there is nothing to unwind: a lab's teardown stops every
    process in its namespaces, that child too, and it leaves quietly."""
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
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
