"""``tcplab board``: the live page (and ``run NAME --board``, ``lab up
--board``).

Three ways to feed it:

- by itself: the board runs catalogue scenarios (the page's run button, or
  the names given), each in a lab of its own;
- ``--lab ID``: a lab made by ``tcplab lab up``: its proxy's segments (from
  its log), and every socket of the client and server namespaces (a watcher
  in each); rules go to its proxy;
- ``--events-socket PATH --control PATH``: compose — the containers send
  their records to the socket, rules go to the proxy container's control
  socket.

The URL, with its token, is the first line printed; then the ladder, as the
terminal draws it.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import trio

from tcplab.cli.common import EXIT_USAGE, need_net_admin


def add_board_options(parser: argparse.ArgumentParser, *, full: bool) -> None:
    """The options every way of starting the board takes (``full``: also
    where its records come from)."""
    parser.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="where the page is served (default 127.0.0.1:8080; port 0: any free one)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow --listen on an address other machines reach (the token guards it)",
    )
    if not full:
        return
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="run these first")
    parser.add_argument(
        "--lang", choices=["en", "zh"], default="en", help="the page's first language"
    )
    parser.add_argument("--lab", metavar="ID", help="show a lab made by `tcplab lab up`")
    parser.add_argument(
        "--events-socket", metavar="PATH", help="receive records as datagrams here (compose)"
    )
    parser.add_argument("--control", metavar="PATH", help="the proxy's control socket (compose)")
    parser.add_argument("--quiet", action="store_true", help="print the URL only, not the ladder")
    parser.add_argument(
        "--public-url",
        type=_public_url,
        metavar="URL",
        help="the address to print, when the page is reached through another one "
        "(compose: http://127.0.0.1:8080, the port published on the host)",
    )


def _public_url(text: str) -> str:
    from tcplab.board import serve

    try:
        return serve.public_url(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_board(args: argparse.Namespace) -> int:
    from tcplab.board import serve

    try:
        host, port = serve.parse_listen(args.listen, allow_remote=args.allow_remote)
    except serve.ListenError as exc:
        print(f"tcplab board: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if bool(args.events_socket) != bool(args.control) and not args.lab:
        print("tcplab board: --events-socket and --control go together", file=sys.stderr)
        return EXIT_USAGE
    if not args.events_socket:
        need_net_admin("board")
    try:
        trio.run(_board, args, host, port)
    except KeyboardInterrupt:
        return 130
    except BaseExceptionGroup as group:
        interrupt, rest = group.split(KeyboardInterrupt)
        if interrupt is not None and rest is None:
            return 130
        raise
    return 0


async def _board(args: argparse.Namespace, host: str, port: int) -> None:
    from tcplab.board import backends, serve, sources
    from tcplab.board.service import Board
    from tcplab.cli.run import load_scenario

    # every name is checked before anything starts
    scenarios = [load_scenario(name, "board") for name in args.scenarios]
    board = Board(serve.new_token(), lang=args.lang, echo=None if args.quiet else sys.stdout)
    unparsed = sources.Unparsed()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(board.tend)
        if args.events_socket:
            board.backend = backends.ProxyBackend(args.control)
            await nursery.start(sources.datagrams, args.events_socket, board.push, unparsed)
            nursery.start_soon(board.merge)
        elif args.lab:
            _watch_lab(nursery, board, args.lab, unparsed)
        else:
            runs = backends.RunsBackend(
                nursery, board.placed, board.run_started, board.run_finished
            )
            faults = getattr(args, "faults", None)
            if faults is not None:
                runs.standing.rules = list(faults.rules)
                runs.standing.pace = faults.pace
            board.backend = runs
        url = await nursery.start(serve.serve, board, host, port)
        if getattr(args, "public_url", None):
            url = f"{args.public_url}/?token={board.token}"
        # the URL first: it is what a trainer looks for
        print(f"tcplab board: {url}", flush=True)
        warning = serve.remote_warning(host)
        if warning:
            print(f"tcplab board: {warning}", file=sys.stderr, flush=True)
        print("tcplab board: open it in a browser; Ctrl-C stops the board", flush=True)
        for sc in scenarios:
            assert isinstance(board.backend, backends.RunsBackend)
            await board.backend.wait_idle()
            board.backend.start(sc)


def _watch_lab(nursery: trio.Nursery, board: Any, lab_id: str, unparsed: Any) -> None:
    from tcplab import runner, topology
    from tcplab.board import backends, sources

    try:
        lab = topology.find_lab(lab_id)
    except topology.TopologyError as exc:
        print(f"tcplab board: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    board.backend = backends.ProxyBackend(runner.control_path(lab))
    nursery.start_soon(board.merge)
    log = topology.proxy_log_path(lab.lab_id)
    if log.exists():
        nursery.start_soon(sources.follow_file, log, board.push, unparsed)
    nursery.start_soon(sources.watcher, lab.ns("cli"), "client", board.push, unparsed)
    nursery.start_soon(sources.watcher, lab.ns("srv"), "server", board.push, unparsed)
