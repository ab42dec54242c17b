"""``tcplab watch``: the observer on any namespace (``python -m daemons.watch``)."""

from __future__ import annotations

import argparse
import os
import sys

from core import netns
from core.units import format_duration
from tcplab.cli.common import EXIT_USAGE


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
