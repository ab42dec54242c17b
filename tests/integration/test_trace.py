"""The tracepoint source against the kernel itself.

A reference ftrace instance of the test's own records every
``sock:inet_sock_set_state`` while a conversation runs; every transition of
the lab's sockets must be in the observers' records, once, with
``source="trace"`` and the kernel's time.  Two labs running at once must
never see each other's sockets, and an observer that cannot open its
instance says so and polls.
"""

from __future__ import annotations

import collections
import os
import secrets

import pytest
import trio

from core import tracefs
from core.events import CLOSED, ObserverStart, TcpState, conn_id, endpoint, state_name
from core.tracebuf import TraceEvent
from daemons.statemachine import BIRTHS
from tcplab import causality, connview, runner, topology
from tests.integration.test_conversation import converse

pytestmark = pytest.mark.skipif(
    tracefs.unavailable_reason() is not None, reason=f"{tracefs.unavailable_reason()}"
)
DEADLINE = 60
TOLERANCE_S = 50e-6
"""How close a reported time must be to the kernel's (the mono → wall
conversion is the only difference)."""


def _kernel_conn(event: TraceEvent, lab: topology.Lab, port: int) -> str | None:
    """The lab's connection id of a traced socket, client side first."""
    client = {lab.addr.client4, lab.addr.client6}
    server = {lab.addr.server4, lab.addr.server6}
    if event.saddr in client and event.daddr in server:
        return conn_id(event.saddr, event.sport, event.daddr, event.dport)
    if event.saddr in server and event.daddr in client:
        return conn_id(event.daddr, event.dport, event.saddr, event.sport)
    if event.saddr in server and event.dport == 0 and event.sport == port:
        return endpoint(event.saddr, event.sport)  # the listener
    return None


def _wall(mono_ns: int, offset: float) -> float:
    return mono_ns / 1e9 + offset


async def _reference_run(opts: runner.RunOptions) -> tuple[runner.RunResult, list[TraceEvent]]:
    name = f"tcplab-test-{os.getpid()}-ref-{secrets.token_hex(3)}"
    with tracefs.Instance.create(
        name, events=("sock/inet_sock_set_state",), filters={}, buffer_kb=4096
    ) as reference:
        seen: list[TraceEvent] = []
        with trio.fail_after(DEADLINE), topology.lab() as lab:
            result = await runner.run_in_lab(lab, opts)
            seen += reference.read_available()
        assert reference.lost == 0
    assert result.lab is not None
    return result, seen


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
async def test_every_kernel_transition_is_reported_once_with_its_time(ipv6: bool) -> None:
    import time

    opts = runner.RunOptions(
        server_close="linger:100ms", client_close="active", count=3, ipv6=ipv6, observe_for=0.5
    )
    offset = time.time() - time.monotonic()
    result, seen = await _reference_run(opts)
    assert result.lab is not None
    # the kernel's transitions of this lab's sockets; a SYN_SENT without a
    # port gets the four-tuple of its socket's next transition
    kernel: list[tuple[str, str, str, float]] = []
    by_socket: dict[int, list[TraceEvent]] = collections.defaultdict(list)
    for event in seen:
        by_socket[event.skaddr].append(event)
    born: set[str] = set()
    for event in seen:
        if event.protocol != 6:
            continue
        tied = event
        if event.sport == 0 and event.dport != 0:
            later = [e for e in by_socket[event.skaddr] if e.ts_ns > event.ts_ns and e.sport]
            if later:
                tied = later[0]
        conn = _kernel_conn(tied, result.lab, opts.port)
        if conn is None:
            continue
        old, new = state_name(event.oldstate or 0), state_name(event.newstate or 0)
        if (old, new) in BIRTHS:
            born.add(conn)
        kernel.append((conn, old, new, _wall(event.ts_ns, offset)))
    # Only the sockets born while the reference watched are this lab's.  The
    # lab's addresses were an earlier lab's: a socket that lab's namespace
    # still held when it was removed (an orphan retransmitting its FIN into
    # a veth that is gone) is closed by the kernel later, perhaps now, and
    # the tracepoint does not say which namespace it was in.
    kernel = [k for k in kernel if k[0] in born]
    assert len(kernel) >= 3 * 10, kernel  # three connections, both sides
    traced = [r for r in result.records if isinstance(r, TcpState) and r.source == "trace"]
    unmatched = list(traced)
    for conn, old, new, ts in kernel:
        match = [r for r in unmatched if (r.conn, r.old, r.new) == (conn, old, new)]
        assert match, f"not reported: {conn} {old} → {new}"
        best = min(match, key=lambda r: abs(r.ts - ts))
        assert abs(best.ts - ts) <= TOLERANCE_S + 2e-3, (conn, old, new, best.ts - ts)
        unmatched.remove(best)
    # nothing reported from the trace that the kernel did not say, nothing twice
    assert unmatched == []
    # the clock conversion: reported times agree with the kernel's within 50 µs
    # (the reference's offset was taken before the run, so allow for drift)
    errors = sorted(
        abs(min(abs(r.ts - ts) for r in traced if (r.conn, r.old, r.new) == (c, o, n)))
        for c, o, n, ts in kernel
    )
    assert errors[len(errors) // 2] <= TOLERANCE_S, errors
    # what only sock_diag sees comes from it: the client's TIME_WAIT, in a
    # minisock (the orphan's FIN_WAIT2 already was one when the server's FIN
    # came, 100 ms after the client's close)
    for path in connview.paths(result.records, "client"):
        entered = path.entered("TIME_WAIT")
        assert entered is not None and (entered.sock == "timewait" or entered.handed_to)
    minisock = [
        r for r in result.of("client", TcpState) if r.sock == "timewait" and r.source == "poll"
    ]
    assert minisock, "the timewait minisocks' states come from sock_diag"
    assert causality.check(result.records) == []


async def test_two_labs_at_once_never_see_each_others_sockets() -> None:
    opts = runner.RunOptions(server_close="linger:200ms", count=2, observe_for=0.5)
    results: list[runner.RunResult] = []

    async def one() -> None:
        with trio.fail_after(DEADLINE), topology.lab() as lab:
            results.append(await runner.run_in_lab(lab, opts))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one)
        nursery.start_soon(one)
    first, second = results
    assert first.lab is not None and second.lab is not None
    assert first.lab.addr.slot != second.lab.addr.slot
    for result, other in ((first, second), (second, first)):
        assert result.lab is not None and other.lab is not None
        mine = {result.lab.addr.client4, result.lab.addr.server4}
        theirs = {other.lab.addr.client4, other.lab.addr.server4}
        states = [r for r in result.records if isinstance(r, TcpState)]
        assert any(r.source == "trace" for r in states)
        for record in states:
            assert not any(address in record.conn for address in theirs), record
            assert any(address in record.conn for address in mine), record
        assert len(connview.paths(result.records, "client")) == 2
        assert causality.check(result.records) == []


async def test_an_observer_that_cannot_trace_says_why_and_polls() -> None:
    # the server's instance name is taken already: its observer cannot have it
    with trio.fail_after(DEADLINE), topology.lab() as lab:
        squatter = tracefs.Instance.create(
            lab.trace_instance("srv"), events=("sock/inet_sock_set_state",)
        )
        try:
            result = await runner.run_in_lab(lab, runner.RunOptions(observe_for=0.5))
        finally:
            squatter.remove()
    (start,) = result.of("server", ObserverStart)
    assert start.sources == ("poll",)
    assert start.trace_unavailable and "exists" in start.trace_unavailable
    (client_start,) = result.of("client", ObserverStart)
    assert "trace" in client_start.sources
    server_states = [r for r in result.of("server", TcpState) if not r.is_listener]
    assert server_states and all(r.source != "trace" for r in server_states)
    assert connview.paths(result.records, "server")[0].states[-1] == CLOSED
    assert causality.check(result.records) == []


async def test_the_lab_removes_its_instances() -> None:
    result = await converse(runner.RunOptions(observe_for=0.2))
    assert result.lab is not None
    assert tracefs.instance_names(f"{topology.TRACE_PREFIX}{result.lab.lab_id}") == []
