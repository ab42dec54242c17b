"""What the two endpoint daemons share: command-line options, entering the
namespace, logging setup, socket helpers."""

from __future__ import annotations

import argparse
import errno
import socket
import sys
from typing import Any

from tcplab import events, logs, netns
from tcplab.units import parse_duration

Key = tuple[str, int, str, int]


def duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def address(text: str) -> tuple[str, int]:
    try:
        return events.parse_endpoint(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (expected ADDR:PORT, [ADDR6]:PORT)") from None


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--netns", help="enter this network namespace before opening sockets")
    parser.add_argument(
        "--log-format", choices=logs.FORMATS, default="auto", help="console on a tty, else JSON"
    )
    parser.add_argument(
        "--observe-interval",
        type=duration,
        default=duration("5ms"),
        metavar="D",
        help="how often the observer polls sock_diag (default 5ms)",
    )
    parser.add_argument(
        "--observe-for",
        type=duration,
        default=None,
        metavar="D",
        help="after the conversation, keep observing at most this long "
        "(default: until the sockets are gone)",
    )


def setup(component: str, args: argparse.Namespace) -> Any:
    """Enter the namespace (before any thread or socket exists) and configure
    logging; exits with status 2 and a clear message if the namespace is bad."""
    if args.netns:
        try:
            netns.enter(args.netns)
        except OSError as exc:
            print(
                f"{component}: cannot enter network namespace {args.netns!r}: {exc}",
                file=sys.stderr,
            )
            raise SystemExit(2) from None
    logs.configure(component, args.log_format)
    return logs.get_logger()


def errno_name(exc: BaseException) -> str:
    """``ECONNREFUSED`` for a refused connect, ``ETIMEDOUT``…; the class name
    for errors without an errno."""
    code = getattr(exc, "errno", None)
    if isinstance(code, int) and code in errno.errorcode:
        return errno.errorcode[code]
    if isinstance(exc, TimeoutError):
        return "ETIMEDOUT"
    return type(exc).__name__


def sock_key(sock: Any) -> Key:
    """(local addr, local port, remote addr, remote port) as sock_diag reports it."""
    local = sock.getsockname()
    remote = sock.getpeername()
    return (local[0], local[1], remote[0], remote[1])


def set_abortive_close(sock: Any) -> None:
    """SO_LINGER on, 0 s: close() sends RST and skips FIN and TIME_WAIT."""
    import struct

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
