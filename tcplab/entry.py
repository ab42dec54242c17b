"""The ``tcplab`` command's entry point.

It imports almost nothing itself, so that a Ctrl-C while the command's
modules load (pyroute2, structlog and trio take a few hundred milliseconds)
ends the command quietly with status 130 — nothing had been built yet —
instead of with a traceback.
"""

from __future__ import annotations

import os
import signal
import sys


def _interrupted_while_loading(_signum: int, _frame: object) -> None:
    # A KeyboardInterrupt raised inside an import can surface as another
    # error (dataclasses wraps it in a RuntimeError from __set_name__), with
    # a traceback: nothing has been built yet, so leave at once instead.
    os.write(2, b"interrupted\n")
    os._exit(130)


def main() -> int:
    previous = signal.signal(signal.SIGINT, _interrupted_while_loading)
    try:
        from tcplab import cli
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        return cli.main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
