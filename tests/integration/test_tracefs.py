"""tracefs instances on the running kernel: record the state changes of one
TCP connection made in a namespace of our own, wait for them with
``trio.lowlevel.wait_readable`` on the per-CPU pipes, and check what the
binary pages say.

Like every integration test this needs CAP_NET_ADMIN and CAP_SYS_ADMIN
(tests/conftest.py); it also needs a usable tracefs.  The namespace and the
trace instance go away even when a test fails.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence

import pytest
import trio

from core import netns, tracebuf, tracefs
from core.tracebuf import TraceEvent
from tcplab import topology

REASON = tracefs.unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"no kernel tracing: {REASON}")

SET_STATE = "sock/inet_sock_set_state"
CLOSE, SYN_SENT, ESTABLISHED, SYN_RECV = 7, 2, 1, 3
FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, LISTEN = 4, 5, 8, 9, 10


@pytest.fixture
def namespace() -> Iterator[tuple[str, str]]:
    """A namespace ``tltrace<random>`` with 192.0.2.<random>/32 on lo."""
    name = f"tltrace{secrets.token_hex(4)}"
    address = f"192.0.2.{2 + secrets.randbelow(250)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        ip = ["ip", "-n", name]
        subprocess.run([*ip, "link", "set", "lo", "up"], check=True)
        subprocess.run([*ip, "addr", "add", f"{address}/32", "dev", "lo"], check=True)
        yield name, address
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def instance(namespace: tuple[str, str]) -> Iterator[tracefs.Instance]:
    """An instance recording set_state for the namespace's address only."""
    _, address = namespace
    # the kernel compares a __u8[4] field with a number as a little-endian u32
    literal = tracebuf.ipv4_filter_literal(address)
    made = tracefs.Instance.create(
        f"tcplab-test-{os.getpid()}-{secrets.token_hex(4)}",
        events=[SET_STATE],
        filters={SET_STATE: f"saddr == {literal} || daddr == {literal}"},
    )
    try:
        yield made
    finally:
        made.remove()
        assert not made.path.exists()


async def wait_any_readable(fds: Sequence[int]) -> None:
    async def one(fd: int, scope: trio.CancelScope) -> None:
        await trio.lowlevel.wait_readable(fd)
        scope.cancel()

    async with trio.open_nursery() as nursery:
        for fd in fds:
            nursery.start_soon(one, fd, nursery.cancel_scope)


async def collect(
    instance: tracefs.Instance, done: Callable[[list[TraceEvent]], bool]
) -> list[TraceEvent]:
    """Read until ``done`` says enough, waiting on the pipes in between."""
    got: list[TraceEvent] = []
    while True:
        got.extend(instance.read_available())
        if done(got):
            return tracebuf.merge(got)
        await wait_any_readable(instance.fds)


def transitions(events: list[TraceEvent]) -> list[tuple[int | None, int | None]]:
    return [(e.oldstate, e.newstate) for e in events]


async def test_one_connection(namespace: tuple[str, str], instance: tracefs.Instance) -> None:
    ns, address = namespace
    port = 20000 + secrets.randbelow(10000)
    # nothing recorded yet: no pipe polls readable
    assert instance.read_available() == []
    assert select.select(instance.fds, [], [], 0)[0] == []

    def action() -> tuple[int, int, int, int]:
        with netns.inside(ns):
            start = time.monotonic_ns()
            listener = socket.socket()
            listener.bind((address, port))
            listener.listen()
            client = socket.create_connection((address, port))
            server, _ = listener.accept()
            client_port = client.getsockname()[1]
            opened = time.monotonic_ns()
            client.close()
            assert server.recv(1) == b""
            server.close()
            listener.close()
            return start, opened, time.monotonic_ns(), client_port

    def ours(e: TraceEvent) -> bool:
        return port in (e.sport, e.dport)

    def done(events: list[TraceEvent]) -> bool:
        ends = {(e.oldstate, e.newstate) for e in events if ours(e)}
        return {(LISTEN, CLOSE), (LAST_ACK, CLOSE), (FIN_WAIT2, CLOSE)} <= ends

    with trio.fail_after(10):
        start, opened, finished, client_port = await trio.to_thread.run_sync(action)
        events = [e for e in await collect(instance, done) if ours(e)]
    collected = time.monotonic_ns()

    assert all(e.kind == "set_state" and e.family == 2 and e.protocol == 6 for e in events)
    assert all(address in (e.saddr, e.daddr) for e in events)
    connect = next(e for e in events if (e.oldstate, e.newstate) == (CLOSE, SYN_SENT))
    client = [e for e in events if e.skaddr == connect.skaddr]
    assert transitions(client) == [
        (CLOSE, SYN_SENT),
        (SYN_SENT, ESTABLISHED),
        (ESTABLISHED, FIN_WAIT1),
        (FIN_WAIT1, FIN_WAIT2),
        (FIN_WAIT2, CLOSE),
    ]
    # connect() changes the state before it picks the port: only the
    # socket address ties the first event to the connection
    assert (connect.sport, connect.dport) == (0, port)
    assert all((e.sport, e.dport) == (client_port, port) for e in client[1:])
    listen = next(e for e in events if (e.oldstate, e.newstate) == (CLOSE, LISTEN))
    listener = [e for e in events if e.skaddr == listen.skaddr]
    assert transitions(listener) == [(CLOSE, LISTEN), (LISTEN, CLOSE)]
    assert all((e.sport, e.dport) == (port, 0) for e in listener)
    server = [e for e in events if e not in client and e not in listener]
    assert transitions(server) == [
        (LISTEN, SYN_RECV),
        (SYN_RECV, ESTABLISHED),
        (ESTABLISHED, CLOSE_WAIT),
        (CLOSE_WAIT, LAST_ACK),
        (LAST_ACK, CLOSE),
    ]
    assert len({e.skaddr for e in server}) == 1
    assert all((e.sport, e.dport) == (port, client_port) for e in server)

    # The trace clock is CLOCK_MONOTONIC: every event falls inside the
    # window time.monotonic_ns() measured around it, in causal order.
    stamps = [e.ts_ns for e in events]
    assert stamps == sorted(stamps)
    assert start <= stamps[0] and stamps[-1] <= collected
    handshake = [listen, connect, *client[1:2], *server[:2]]
    assert all(start <= e.ts_ns <= opened for e in handshake)
    # the client is ESTABLISHED on the SYN-ACK; the server makes its socket on the ACK
    assert listen.ts_ns < connect.ts_ns < client[1].ts_ns < server[0].ts_ns < server[1].ts_ns
    assert opened <= client[2].ts_ns <= finished  # the FIN
    assert instance.lost == 0 and instance.malformed == 0


def test_bad_names_and_filters_leave_nothing() -> None:
    with pytest.raises(ValueError, match="name"):
        tracefs.Instance.create("tcplab-test/../x", events=[SET_STATE])
    with pytest.raises(ValueError, match="event"):
        tracefs.Instance.create("tcplab-test-x", events=["inet_sock_set_state"])
    with pytest.raises(ValueError, match="not enabled"):
        tracefs.Instance.create("tcplab-test-x", events=[], filters={SET_STATE: "sport == 1"})
    name = f"tcplab-test-{os.getpid()}-{secrets.token_hex(4)}"
    with pytest.raises(tracefs.TracefsError):
        tracefs.Instance.create(name, events=[SET_STATE], filters={SET_STATE: "nosuch == 1"})
    base = tracefs.root()
    assert base is not None
    assert not (base / "instances" / name).exists()


def test_close_and_remove_are_idempotent() -> None:
    with tracefs.Instance.create(
        f"tcplab-test-{os.getpid()}-{secrets.token_hex(4)}", events=()
    ) as made:
        assert made.fds and len(made.fds) == len(made.cpu_fds)
        assert made.read_size == made.layout.page_size
        made.close()
        made.close()
        assert made.fds == ()
        assert made.read_available() == []
        made.remove()
        made.remove()
        assert not made.path.exists()
    assert not made.path.exists()


def test_remove_instances_by_prefix() -> None:
    prefix = f"tcplab-test-{os.getpid()}-{secrets.token_hex(4)}-"
    left = [tracefs.Instance.create(prefix + tag, events=[SET_STATE]) for tag in ("a", "b")]
    for made in left:
        made.close()  # a killed process leaves the directory, not its descriptors
    assert tracefs.remove_instances(prefix) == [prefix + "a", prefix + "b"]
    assert not any(made.path.exists() for made in left)
    assert tracefs.remove_instances(prefix) == []
    with pytest.raises(ValueError):
        tracefs.remove_instances("")


def test_clean_keeps_a_live_processs_instance_and_removes_a_dead_ones() -> None:
    """Every `tcplab` command removes what killed runs left; an instance
    named for a process (tcplab-<kind>-<pid>-…) is kept while it lives,
    however many commands run meanwhile, and removed once it is gone."""
    gone_pid = subprocess.Popen(["true"])  # a pid that has just exited
    gone_pid.wait()
    mine = tracefs.Instance.create(f"tcplab-test-{os.getpid()}-{secrets.token_hex(3)}", events=())
    theirs = tracefs.Instance.create(
        f"tcplab-test-{gone_pid.pid}-{secrets.token_hex(3)}", events=()
    )
    # without open descriptors, as while an instance is being made (the
    # kernel refuses to remove one whose pipes are open)
    mine.close()
    theirs.close()  # a killed process leaves the directory, not its descriptors
    try:
        report = topology.clean()
        assert mine.path.exists()
        assert not theirs.path.exists()
        assert any(f"ftrace {theirs.name}" in what for what in report.removed.values())
    finally:
        tracefs.remove_instances(mine.name)
        tracefs.remove_instances(theirs.name)
