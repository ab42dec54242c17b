"""The kernel's own account of a run, for the benchmarks to hold the
observers against: a private ftrace instance recording every
``sock:inet_sock_set_state`` while a lab runs (root and tracefs needed)."""

from __future__ import annotations

import collections
import os
import sys
from typing import NamedTuple

from core import tracefs
from core.events import conn_id, endpoint, state_name
from core.tracebuf import TraceEvent
from core.tracefs import TRACE_PREFIX
from tcplab import runner, topology


class KernelTransition(NamedTuple):
    side: str
    """``client`` or ``server``: whose socket it is."""
    conn: str
    old: str
    new: str
    ts: float
    """Wall time."""


def kernel_transitions(
    seen: list[TraceEvent], lab: topology.Lab, offset_ns: int
) -> list[KernelTransition]:
    """The lab's sockets' transitions, as the kernel said."""
    client = {lab.addr.client4, lab.addr.client6}
    server = {lab.addr.server4, lab.addr.server6}
    by_socket: dict[int, list[TraceEvent]] = collections.defaultdict(list)
    for event in seen:
        by_socket[event.skaddr].append(event)
    out = []
    for event in seen:
        tied = event
        if event.sport == 0 and event.dport != 0:
            later = [e for e in by_socket[event.skaddr] if e.ts_ns > event.ts_ns and e.sport]
            if not later:
                continue
            tied = later[0]
        if tied.saddr in client and tied.daddr in server:
            side, conn = "client", conn_id(tied.saddr, tied.sport, tied.daddr, tied.dport)
        elif tied.saddr in server and tied.daddr in client:
            side, conn = "server", conn_id(tied.daddr, tied.dport, tied.saddr, tied.sport)
        elif tied.saddr in server and tied.dport == 0:
            side, conn = "server", endpoint(tied.saddr, tied.sport)
        else:
            continue
        old, new = state_name(event.oldstate or 0), state_name(event.newstate or 0)
        out.append(KernelTransition(side, conn, old, new, (event.ts_ns + offset_ns) / 1e9))
    return out


async def one_run(
    opts: runner.RunOptions, spec: topology.LabSpec | None = None
) -> tuple[runner.RunResult, list[TraceEvent], int]:
    """Run ``opts`` in a new lab while a private instance records; the
    result, the kernel's events, and the mono → wall offset (ns)."""
    # named for this process, so that `tcplab clean` run meanwhile (by any
    # tcplab command) keeps it while we live
    name = f"{TRACE_PREFIX}bench-{os.getpid()}"
    with tracefs.Instance.create(
        name, events=("sock/inet_sock_set_state",), filters={}, buffer_kb=16384
    ) as reference:
        offset_ns = tracefs.wall_offset_ns()
        with topology.lab(spec) as lab:
            result = await runner.run_in_lab(lab, opts)
            seen = reference.read_available()
        if reference.lost:
            print(f"  (reference lost {reference.lost} events)", file=sys.stderr)
    return result, seen, offset_ns
