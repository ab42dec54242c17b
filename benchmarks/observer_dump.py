"""How long one observer poll (sock_diag dump + diff) takes on a namespace
holding 10,000 TIME_WAIT sockets, next to ``ss -tan`` on the same namespace.

Run as root from the repository root::

    .venv/bin/python benchmarks/observer_dump.py [--sockets 10000] [--rounds 10]

It builds a lab, fills the client namespace with TIME_WAIT sockets (the
client closes first over loopback, so every one of them is in TIME_WAIT on
the client side), then alternates, ``--rounds`` times:

- observer: one ``await Observer.poll_once()`` on a running observer (poll
  source only) — the netlink dump of every TCP socket of both families, in
  the worker thread the observer dumps in, and the diff against the
  previous poll (steady state: all TIME_WAIT, nothing changed, nothing to
  decode or log; the observer's start, which opens its sockets and makes
  the first poll, where every socket is new, is timed and printed once);
- ss: ``ss -tan`` run inside the same namespace, output discarded — the
  process a person would run to see the same sockets (timed in a worker
  thread, which enters the namespace first).

Both are timed by wall clock; it prints each one's median and the median
ratio observer / ss.  Target: at most 1.0.  The lab is torn down at exit.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time

import trio

from core import logs, netns
from daemons import matching, observer
from daemons.diagsock import DiagSocket
from tcplab import topology


def fill_time_wait(count: int) -> None:
    """``count`` client-side TIME_WAIT sockets in the current namespace."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 7007))
    listener.listen(1024)
    for _ in range(count):
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.connect(("127.0.0.1", 7007))
        server, _ = listener.accept()
        client.close()  # active close: the client side ends in TIME_WAIT
        server.close()
    listener.close()


def count_time_wait(ns: str) -> int:
    with DiagSocket.open(ns) as diag:
        return sum(1 for info in diag.dump() if info.state == 6)


def time_ss(ns: str) -> float:
    """One ``ss -tan`` in namespace ``ns``, in seconds (blocking)."""
    with netns.inside(ns):
        t0 = time.perf_counter()
        subprocess.run(["ss", "-tan"], stdout=subprocess.DEVNULL, check=True)
        return time.perf_counter() - t0


async def measure(
    obs: observer.Observer, ns: str, rounds: int
) -> tuple[float, list[float], list[float]]:
    """The observer's start (first poll included), then ``rounds``
    alternating (steady-state poll, ``ss -tan``) timings, in seconds."""
    ours: list[float] = []
    theirs: list[float] = []
    async with trio.open_nursery() as nursery:
        t0 = time.perf_counter()
        await nursery.start(obs.run)  # opens its sockets, polls once, then sleeps
        cold = time.perf_counter() - t0
        for _ in range(rounds):
            t0 = time.perf_counter()
            changes = await obs.poll_once()
            ours.append(time.perf_counter() - t0)
            assert not changes, "steady state expected: no socket changed"
            theirs.append(await trio.to_thread.run_sync(time_ss, ns))
        nursery.cancel_scope.cancel()
    return cold, ours, theirs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    spec = topology.LabSpec(
        # a fresh namespace caps TIME_WAIT buckets low; the lab's own ns only
        sysctls={"cli": {"net.ipv4.tcp_max_tw_buckets": str(args.sockets * 4)}},
    )
    with topology.lab(spec) as lab:
        ns = lab.ns("cli")
        started = time.perf_counter()
        with netns.inside(ns):
            fill_time_wait(args.sockets)
        made = count_time_wait(ns)
        print(
            f"namespace {ns}: {made} TIME_WAIT sockets "
            f"(made in {time.perf_counter() - started:.1f} s)"
        )
        if made < args.sockets * 0.99:
            print("fewer TIME_WAIT sockets than asked for", file=sys.stderr)
            return 1

        # the daemons' own JSON logging, written to /dev/null
        devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
        logs.configure("bench", "json", devnull)
        obs = observer.Observer(
            logs.get_logger(),
            match=matching.port_filter(()),
            # its own loop must not poll between ours: only our polls count
            interval=3600.0,
            netns=ns,
        )
        cold, ours, theirs = trio.run(measure, obs, ns, args.rounds)
        ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
        print(
            f"observer dump+diff: median {statistics.median(ours) * 1e3:.1f} ms "
            f"(min {min(ours) * 1e3:.1f}, max {max(ours) * 1e3:.1f})"
        )
        print(
            "observer start (sockets opened; first poll: every socket new, "
            f"decoded, logged): {cold * 1e3:.1f} ms"
        )
        print(
            f"ss -tan:            median {statistics.median(theirs) * 1e3:.1f} ms "
            f"(min {min(theirs) * 1e3:.1f}, max {max(theirs) * 1e3:.1f})"
        )
        print(
            f"ratio observer/ss:  median {statistics.median(ratios):.2f}x "
            f"over {args.rounds} alternating rounds (target <= 1.0x)"
        )
        devnull.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
