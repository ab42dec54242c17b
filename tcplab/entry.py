"""The ``tcplab`` command's entry point.

It imports almost nothing itself, so that a Ctrl-C while the command's
modules load (pyroute2, structlog and trio take a few hundred milliseconds)
ends the command quietly with status 130 — nothing had been built yet —
instead of with a traceback.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from tcplab import cli

        return cli.main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
