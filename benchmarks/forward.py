"""The proxy against the kernel's own forwarding, in the same lab, same run.

Run as root from the repository root::

    .venv/bin/python benchmarks/forward.py [--rounds 5] [--megabytes 100] [--macs random]

One lab; each round measures the kernel forwarding (ip_forward=1, no proxy)
and then the proxy (ip_forward=0, ``python -m proxy`` in the middle, no
rules), alternating, and prints medians and ratios:

- bulk throughput: one TCP connection, client → server, ``--megabytes`` of
  data written with sendall (1 MiB at a time), timed until the server has
  read it all; ratio proxy ÷ kernel (target ≥ 0.5);
- added round-trip time: 1-byte echo ping-pong over one connection, 2,000
  round trips, p50 of proxy minus p50 of kernel (target ≤ 100 µs);
- delay precision: with a ``delay client:data=D`` rule added through the
  control API, the echo's round trip minus the no-rule round trip is the
  delay the proxy really added; p99 of its absolute error from D, for D =
  5 ms, 50 ms, 500 ms (target ≤ 2 ms).

By default the proxy is measured three ways per round: ``control`` —
``tcplab lab up``'s default: the handshake, teardown, resets, retransmits
and rule hits are logged, and established connections with no rule on
their data ride the kernel express lane (proxy/express.py); ``off`` — the
same logging with the express lane off, so every frame goes through the
Python forwarder and only control segments are logged (target ≥ 0.25);
``all`` — every frame through Python, every segment logged.  The delay
precision runs use ``off``: a delay rule on data turns the express lane
off, so the round trip without the rule is measured on that path too.

``--macs random`` builds the lab without mirrored MACs (each veth keeps its
own, as in a compose network), so the express lane has to rewrite the
Ethernet header: its filters are then eBPF programs (proxy/bpf_prog.py)
instead of ``u32`` ones.  Each proxy run's ``daemon_done`` says how many
connections rode the lane; the summary prints it.

``--modes`` picks what is measured against the kernel in each round, for
instance ``--modes off --no-delay`` for just the every-frame path with data
logging off (``--log-segments control --express off``: every frame goes
through the Python forwarder, only control segments are logged).  A mode is
``all``, ``control``, ``none`` (``--log-segments`` that, express lane
``auto``) or ``off`` (``control`` with ``--express off``); with ``-ring``
appended (``off-ring``), the proxy reads frames from its receive ring
(``--rx-ring auto``, proxy/rxring.py) instead of one per ``recvmsg``.  ``/proc/loadavg``
is printed before and after: another process loading the CPU skews a run.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core import control, eventcodec, netns
from proxy.options import ProxyOptions
from tcplab import runner, topology

PORT = 9000
CHUNK = 1 << 20


class Sink:
    """A server in the server namespace: reads until EOF (bulk) or echoes."""

    def __init__(self, lab: topology.Lab, mode: str) -> None:
        with netns.inside(lab.ns("srv")):
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((lab.addr.server4, PORT))
        self.listener.listen(8)
        self.mode = mode
        self.received = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buffer = bytearray(CHUNK)
        while True:
            n = conn.recv_into(buffer)
            if not n:
                break
            self.received += n
            if self.mode == "echo":
                conn.sendall(buffer[:n])
        conn.close()
        self.done.set()

    def close(self) -> None:
        self.listener.close()


def connect(lab: topology.Lab) -> socket.socket:
    with netns.inside(lab.ns("cli")):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(30)
    sock.connect((lab.addr.server4, PORT))
    return sock


def bulk(lab: topology.Lab, megabytes: int) -> float:
    """Bits per second, client to server."""
    sink = Sink(lab, "bulk")
    data = b"x" * CHUNK
    try:
        sock = connect(lab)
        start = time.perf_counter()
        for _ in range(megabytes):
            sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        if not sink.done.wait(120):
            raise TimeoutError("bulk transfer did not finish")
        elapsed = time.perf_counter() - start
        sock.close()
    finally:
        sink.close()
    return sink.received * 8 / elapsed


def round_trips(lab: topology.Lab, count: int) -> list[float]:
    """Seconds per 1-byte echo."""
    sink = Sink(lab, "echo")
    out = []
    try:
        sock = connect(lab)
        for _ in range(20):  # warm up: neighbours resolved, flow known
            sock.sendall(b"x")
            sock.recv(1)
        for _ in range(count):
            start = time.perf_counter()
            sock.sendall(b"x")
            if sock.recv(1) != b"x":
                raise RuntimeError("echo broke")
            out.append(time.perf_counter() - start)
        sock.close()
    finally:
        sink.close()
    return out


LANE_COUNTS: dict[str, list[int]] = {}
"""Per mode, each proxy run's ``express_connections``."""


def _express_connections(log: Any) -> int:
    """The ``express_connections`` counter of the proxy's ``daemon_done``."""
    log.seek(0)
    for line in log.read().splitlines():
        fields = eventcodec.parse_line(line)
        if fields and fields.get("event") == "daemon_done":
            return int((fields.get("counters") or {}).get("express_connections", 0))
    return -1


@contextlib.contextmanager
def proxy_running(lab: topology.Lab, mode: str) -> Iterator[str]:
    """The proxy forwarding in the middle; yields its control socket path.
    ``mode`` is a ``--log-segments`` value, or ``off``: ``control`` with the
    express lane off."""
    base, _, reader = mode.partition("-")
    log_segments, express = ("control", "off") if base == "off" else (base, "auto")
    topology.set_forwarding(lab, topology.Forwarding.PROXY)
    path = runner.control_path(lab)
    argv = runner.daemon_argv(
        "proxy",
        ProxyOptions(
            netns=lab.ns("mbx"),
            log_format="json",
            control=path,
            log_segments=log_segments,  # type: ignore[arg-type]
            express=express,
            rx_ring="auto" if reader == "ring" else "off",
        ),
    )
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    if control.request(path, {"op": "rules"}, timeout=1).get("ok"):
                        break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise
                    time.sleep(0.05)
            yield path
        finally:
            proc.terminate()
            proc.wait(10)
            LANE_COUNTS.setdefault(mode, []).append(_express_connections(log))


@contextlib.contextmanager
def kernel_forwarding(lab: topology.Lab) -> Iterator[None]:
    topology.set_forwarding(lab, topology.Forwarding.KERNEL)
    yield


def label(mode: str) -> str:
    if mode == "kernel":
        return "kernel"
    base, _, reader = mode.partition("-")
    suffix = " --rx-ring auto" if reader == "ring" else ""
    if base == "all":
        return f"proxy --log-segments all{suffix} (every frame through Python)"
    if base == "off":
        return f"proxy --log-segments control --express off{suffix} (every frame through Python)"
    return f"proxy --log-segments {base}{suffix} (express lane)"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def delay_precision(lab: topology.Lab, mode: str) -> dict[float, list[float]]:
    """Per delay D: the absolute error from D of each echo's added round trip."""
    errors: dict[float, list[float]] = {}
    with proxy_running(lab, mode) as path:
        base = statistics.median(round_trips(lab, 500))
        for delay, samples in ((0.005, 200), (0.050, 60), (0.500, 30)):
            answer = control.request(
                path,
                {"op": "add", "action": "delay", "rule": f"client:data={delay * 1000:g}ms"},
            )
            assert answer["ok"], answer
            measured = round_trips(lab, samples)
            control.request(path, {"op": "rm", "name": answer["name"]})
            errors[delay] = [abs((m - base) - delay) for m in measured]
    return errors


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--megabytes", type=int, default=100)
    parser.add_argument("--round-trips", type=int, default=2000)
    parser.add_argument("--log-segments", default="control", choices=["all", "control", "none"])
    parser.add_argument(
        "--macs",
        default="mirrored",
        choices=["mirrored", "random"],
        help="the middlebox ports' MACs: mirrored (lab up's) or the veths' own",
    )
    parser.add_argument(
        "--modes",
        default=None,
        help="comma-separated proxy modes to measure: all, control, none, off, "
        "each optionally with -ring "
        "(default: --log-segments's, then off, then all)",
    )
    parser.add_argument("--no-delay", action="store_true", help="skip the delay precision runs")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (it builds a lab)", file=sys.stderr)
        return 1

    # by default: lab up's default, every frame through Python with data
    # logging off, and every frame logged
    chosen = args.modes.split(",") if args.modes else [args.log_segments, "off", "all"]
    known = {"all", "control", "none", "off"}
    if not set(chosen) <= known | {f"{m}-ring" for m in known}:
        parser.error(f"unknown mode in --modes {args.modes!r}")
    modes = ["kernel", *chosen]
    print(f"loadavg before: {Path('/proc/loadavg').read_text().strip()}", flush=True)
    spec = topology.LabSpec(mirrored_macs=args.macs == "mirrored")
    with topology.lab(spec) as lab:
        tput: dict[str, list[float]] = {m: [] for m in modes}
        rtt: dict[str, list[float]] = {m: [] for m in modes}
        for i in range(args.rounds):
            line = []
            for mode in modes:
                with kernel_forwarding(lab) if mode == "kernel" else proxy_running(lab, mode):
                    tput[mode].append(bulk(lab, args.megabytes))
                    rtt[mode].append(statistics.median(round_trips(lab, args.round_trips)))
                gbits, micros = tput[mode][-1] / 1e9, rtt[mode][-1] * 1e6
                line.append(f"{label(mode)} {gbits:.2f} Gbit/s rtt {micros:.0f} us")
            print(f"round {i + 1}: " + " | ".join(line), flush=True)

        # a delay rule on data keeps connections out of the express lane:
        # the no-rule round trip is measured on the same path, the proxy's
        errors = {} if args.no_delay else delay_precision(lab, "off")

    print(f"loadavg after: {Path('/proc/loadavg').read_text().strip()}")
    print()
    print(f"{args.rounds} alternating rounds, {args.macs} MACs; medians")
    for mode in modes[1:]:
        ratios = [p / k for p, k in zip(tput[mode], tput["kernel"], strict=True)]
        added = [p - k for p, k in zip(rtt[mode], rtt["kernel"], strict=True)]
        # every frame through Python with data logging off: 0.25
        target = 0.25 if mode.partition("-")[0] == "off" else 0.5
        print(
            f"{label(mode)}: bulk {statistics.median(tput[mode]) / 1e9:.2f} Gbit/s vs kernel "
            f"{statistics.median(tput['kernel']) / 1e9:.2f}, ratio {statistics.median(ratios):.2f} "
            f"(target >= {target}); echo p50 {statistics.median(rtt[mode]) * 1e6:.0f} us vs "
            f"{statistics.median(rtt['kernel']) * 1e6:.0f} us, added "
            f"{statistics.median(added) * 1e6:.0f} us (target <= 100 us); "
            f"express connections per run {LANE_COUNTS.get(mode)}"
        )
    for delay, errs in errors.items():
        print(
            f"delay {delay * 1000:g} ms: p99 abs error {percentile(errs, 0.99) * 1000:.2f} ms, "
            f"median {statistics.median(errs) * 1000:.2f} ms over {len(errs)} (target <= 2 ms)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
