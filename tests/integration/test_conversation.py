"""Real conversations between real kernels: the state sequences each side's
observer reports for each close-policy pairing.

Each pairing runs with the kernel's tracepoints (where tracefs can be used)
and with polling alone (as in containers).  With the tracepoints every state
must be reported, from the trace, at its own time; polling alone may infer a
state too quick for the 5 ms poller, or miss one no poll could catch (each
test says which).  Every run must obey the causal rules
(:mod:`tcplab.causality`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
import trio

from core import events, tracefs
from core.events import App, ConversationDone, ObserverStart, ObserverStop, TcpState
from daemons.options import ClientOptions, ServerOptions
from tcplab import causality, connview, runner, topology

DEADLINE = 60
TRACING = tracefs.unavailable_reason() is None
SOURCES = [
    pytest.param(True, id="trace", marks=pytest.mark.skipif(not TRACING, reason="no tracefs")),
    pytest.param(False, id="poll"),
]


def check(
    result: runner.RunResult,
    side: str,
    expected: list[str],
    may_infer: Iterable[str] = (),
    may_skip: Iterable[str] = (),
) -> None:
    """The first connection of ``side`` walks exactly ``expected``.  Polling
    alone may skip ``may_skip`` and infer ``may_infer``; with the tracepoint
    nothing is skipped or inferred."""
    traced = "trace" in _sources(result, side)
    paths = connview.paths(connview.until_stop(result.records, side), side)
    assert paths, f"{side}: no connection reported"
    path = paths[0]
    walked = path.states
    skippable = set() if traced else set(may_skip)
    want = [s for s in expected if s not in skippable or s in walked]
    assert walked == want, f"{side}: expected {want}, saw {walked}"
    inferred = {r.new for r in path.records if r.source == "inferred"}
    allowed = set() if traced else set(may_infer)
    assert inferred <= allowed, f"inferred {sorted(inferred - allowed)}; allowed {sorted(allowed)}"


OPENING = {"client": "SYN_SENT", "server": "SYN_RECV"}
"""The state each side passes through on its way to ESTABLISHED."""


def check_active_closer(result: runner.RunResult, side: str) -> None:
    """``side`` closed first: FIN_WAIT1, FIN_WAIT2 (a poll may miss it: the
    peer's ACK and FIN can come together), TIME_WAIT."""
    check(
        result,
        side,
        ["CLOSED", OPENING[side], "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"],
        may_infer={OPENING[side], "FIN_WAIT1"},
        may_skip={"FIN_WAIT2"},
    )


def check_passive_closer(result: runner.RunResult, side: str) -> None:
    """``side`` closed second: CLOSE_WAIT, LAST_ACK, CLOSED."""
    check(
        result,
        side,
        ["CLOSED", OPENING[side], "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"],
        may_infer={OPENING[side], "CLOSE_WAIT", "LAST_ACK"},
    )


def _sources(result: runner.RunResult, side: str) -> tuple[str, ...]:
    (start,) = result.of(side, ObserverStart)
    return start.sources


async def converse(
    opts: runner.RunOptions, spec: topology.LabSpec | None = None
) -> runner.RunResult:
    with trio.fail_after(DEADLINE), topology.lab(spec) as lab:
        result = await runner.run_in_lab(lab, opts)
    assert not result.stray, "\n".join(result.stray)
    for side in ("client", "server"):
        if result.of(side, ObserverStart):
            # the tracepoint source is on exactly when asked for and possible
            assert ("trace" in _sources(result, side)) == (opts.trace and TRACING)
    violations = causality.check(result.records)
    assert not violations, [v.describe() for v in violations]
    return result


def remaining(result: runner.RunResult, component: str) -> list[str]:
    (stop,) = result.of(component, ObserverStop)
    return [sock["state"] for sock in stop.remaining]


@pytest.mark.parametrize("trace", SOURCES)
async def test_client_active_close_textbook_teardown(trace: bool) -> None:
    """Client closes first, the server lingers 300 ms in CLOSE_WAIT: every
    teardown state is held long enough to be polled, except LAST_ACK (one
    RTT on a veth) which may be inferred from the server's own close."""
    result = await converse(
        runner.RunOptions(
            server_close="linger:300ms", client_close="active", observe_for=1.0, trace=trace
        )
    )
    assert result.client_status == 0 and result.server_status == 0
    check(
        result,
        "client",
        ["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"],
        may_infer={"SYN_SENT", "FIN_WAIT1"},
    )
    check(
        result,
        "server",
        ["CLOSED", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"],
        may_infer={"SYN_RECV", "LAST_ACK"},
    )
    # the client leaves with its TIME_WAIT still running: 60 s, minus what passed
    (stop,) = result.of("client", ObserverStop)
    (tw,) = stop.remaining
    assert tw["state"] == "TIME_WAIT"
    assert 55_000 < tw["expires_ms"] <= 60_000
    (listen,) = connview.listener_states(result.records, "server")[:1]
    assert listen.new == "LISTEN"
    assert listen.source == ("trace" if trace and TRACING else "poll")


@pytest.mark.parametrize("trace", SOURCES)
async def test_server_closes_at_once(trace: bool) -> None:
    """With the server closing as soon as it reads EOF, Linux puts the server's
    FIN on the ACK of the client's FIN: the client passes FIN_WAIT2 within one
    softirq.  The tracepoint sees it; the poller cannot say whether it was
    FIN_WAIT2 or CLOSING — so the jump FIN_WAIT1 → TIME_WAIT is reported as
    seen, not invented."""
    result = await converse(
        runner.RunOptions(server_close="immediate", observe_for=0.5, trace=trace)
    )
    check_active_closer(result, "client")
    check_passive_closer(result, "server")
    assert remaining(result, "client") == ["TIME_WAIT"]
    if trace and TRACING:
        # the kernel's FIN_WAIT2 → CLOSE is the hand-over to the timewait minisock
        handed = [r for r in result.of("client", TcpState) if r.handed_to]
        assert [(r.old, r.new, r.handed_state) for r in handed] == [
            ("FIN_WAIT2", "CLOSED", "TIME_WAIT")
        ]


async def test_server_never_closes_close_wait_leak() -> None:
    result = await converse(
        runner.RunOptions(server_close="never", client_close="active", observe_for=1.0)
    )
    check(
        result,
        "server",
        ["CLOSED", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT"],
        may_infer={"SYN_RECV"},
    )
    check(
        result,
        "client",
        ["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2"],
        may_infer={"SYN_SENT", "FIN_WAIT1"},
    )
    assert remaining(result, "server") == ["CLOSE_WAIT"]
    assert remaining(result, "client") == ["FIN_WAIT2"]
    # when the server exits, the kernel closes what it kept: its FIN at last
    (closed,) = [c for c in result.app("server", events.APP_CLOSE) if c.how == "exit"]
    after = connview.paths(result.records, "server")[0].states
    assert after[-3:] == ["CLOSE_WAIT", "LAST_ACK", "CLOSED"], after
    assert closed.conn == connview.paths(result.records, "server")[0].conn


@pytest.mark.parametrize("who", ["server", "client"])
async def test_abort_resets_and_leaves_no_time_wait(who: str) -> None:
    opts = runner.RunOptions(
        server_close="abort" if who == "server" else "linger:2s",
        client_close="abort" if who == "client" else "active",
        observe_for=1.0,
    )
    result = await converse(opts)
    for side in ("client", "server"):
        walked = connview.paths(result.records, side)[0].states
        assert "TIME_WAIT" not in walked, (side, walked)
        assert walked[-1] == "CLOSED", (side, walked)
        assert remaining(result, side) == []
    if who == "client":
        # the client never sent a FIN: the server goes from ESTABLISHED to CLOSED
        check(result, "server", ["CLOSED", "SYN_RECV", "ESTABLISHED", "CLOSED"], {"SYN_RECV"})
    else:
        # the server aborts before its delayed ACK of the client's FIN goes out:
        # the RST meets the client in FIN_WAIT1 (a poll might put a FIN_WAIT2
        # there only if the ACK had come first)
        check(
            result,
            "client",
            ["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "CLOSED"],
            may_infer={"SYN_SENT", "FIN_WAIT1"},
        )
        closes = result.app("server", events.APP_CLOSE)
        assert [c.how for c in closes if c.conn] == ["abort"]


async def test_server_first_gets_time_wait() -> None:
    result = await converse(
        runner.RunOptions(
            server_close="first:2", client_close="passive", send=("one", "two"), observe_for=1.0
        )
    )
    assert result.client_status == 0
    check_active_closer(result, "server")
    check_passive_closer(result, "client")
    assert remaining(result, "server") == ["TIME_WAIT"]
    assert remaining(result, "client") == []


async def test_half_close_server_still_talks_from_close_wait() -> None:
    result = await converse(
        runner.RunOptions(
            server_close="linger:200ms", client_close="shutdown", farewell="bye", observe_for=1.0
        )
    )
    assert result.client_status == 0
    # the client read the farewell after its own FIN: data from CLOSE_WAIT
    got = [r for r in result.app("client", events.APP_RECV) if r.bytes]
    assert sum(r.bytes or 0 for r in got) == len(b"hello\n") + len(b"bye\n")
    check(
        result,
        "server",
        ["CLOSED", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"],
        may_infer={"SYN_RECV", "LAST_ACK"},
    )


async def test_ipv6_conversation() -> None:
    result = await converse(runner.RunOptions(ipv6=True, observe_for=0.5))
    assert result.client_status == 0
    assert result.lab is not None
    prefix = f"[{result.lab.addr.client6}]:"
    conns = {r.conn for r in result.of("client", TcpState)}
    assert conns and all(c.startswith(prefix) for c in conns)
    check_active_closer(result, "client")


async def test_refused_connection_names_the_errno() -> None:
    result = await converse(runner.RunOptions(port=7007, client_port=7999))
    assert result.client_status == 1
    (error,) = result.app("client", events.APP_ERROR)
    assert error.how == "ECONNREFUSED"


async def test_many_connections_in_parallel() -> None:
    result = await converse(
        runner.RunOptions(count=20, concurrency=5, server_close="immediate", observe_for=0.5)
    )
    assert result.client_status == 0
    done = result.of("client", ConversationDone)
    assert len(done) == 20 and all(d.ok for d in done)
    assert sorted(remaining(result, "client")) == ["TIME_WAIT"] * 20
    # with the tracepoint, twenty connects at five at a time: each SYN_SENT
    # (traced before its socket had a port) tied to the right connection
    paths = connview.paths(result.records, "client")
    assert len(paths) == 20
    for path in paths:
        assert path.states[:3] == ["CLOSED", "SYN_SENT", "ESTABLISHED"], path.conn


async def test_server_survives_garbage_resets_and_silence(tmp_path: Path) -> None:
    """Hostile clients: an over-long line, a client that resets mid-message,
    one that connects and says nothing.  The server logs each and still
    serves a well-behaved client afterwards."""
    import socket
    import struct

    from core import netns

    with trio.fail_after(DEADLINE), topology.lab() as lab:
        server_addr = lab.addr.server4
        server_argv = runner.daemon_argv(
            "daemons.server",
            ServerOptions(
                netns=lab.ns("srv"),
                log_format="json",
                listen=(server_addr, 7007),
                max_message=64,
                idle_timeout=0.3,
            ),
        )
        # A file, not a pipe: nobody reads while the server runs, and its
        # observer logs enough to fill a pipe and block it.
        log_path = tmp_path / "server.jsonl"
        log_file = log_path.open("wb")
        server = await trio.lowlevel.open_process(server_argv, stdout=log_file)
        try:
            with netns.inside(lab.ns("cli")):
                socks = [trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(3)]
            garbage, resetter, silent = socks
            while True:
                try:
                    await garbage.connect((server_addr, 7007))
                    break
                except OSError:
                    await trio.sleep(0.05)
            await garbage.send(b"\xff" * 200)
            await resetter.connect((server_addr, 7007))
            await resetter.send(b"half a line")
            resetter.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            resetter.close()
            await silent.connect((server_addr, 7007))
            # the server drops the silent one after its idle timeout: we see EOF
            assert await silent.recv(10) == b""
            garbage.close()
            silent.close()
            client = await trio.run_process(
                runner.daemon_argv(
                    "daemons.client",
                    ClientOptions(
                        netns=lab.ns("cli"),
                        log_format="json",
                        connect=(server_addr, 7007),
                        observe_for=0.2,
                    ),
                ),
                capture_stdout=True,
                check=False,
            )
            assert client.returncode == 0, client.stdout.decode()
        finally:
            server.terminate()
            await server.wait()
            log_file.close()
    raw = log_path.read_bytes()
    records = [events.parse_record(line) for line in raw.splitlines()]
    apps = [r for r in records if isinstance(r, App)]
    errors = {r.how for r in apps if r.kind == events.APP_ERROR}
    assert {"EMSGSIZE", "idle"} <= errors, errors
    accepts = [r for r in apps if r.kind == events.APP_ACCEPT]
    assert len(accepts) == 4


SERVER_PATH = ["CLOSED", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"]


@pytest.mark.slow
@pytest.mark.parametrize("trace", SOURCES)
async def test_hundreds_of_connections_at_once_every_state_reported(trace: bool) -> None:
    """Three hundred clients at once through the lab: none fails, and the
    server's observer reports every state of every connection's socket
    (with polling alone some are inferred — from the server's own facts:
    EOF read, then its close — never skipped).  No timing is asserted: the
    speed is the benchmark's business (benchmarks/echo_load.py)."""
    count = 300
    result = await converse(
        runner.RunOptions(
            count=count,
            concurrency=count,
            server_close="immediate",
            client_close="active",
            observe_for=1.0,
            trace=trace,
        )
    )
    assert result.client_status == 0 and result.server_status == 0
    done = result.of("client", ConversationDone)
    assert len(done) == count
    assert [d for d in done if not d.ok] == []
    accepted = {a.conn for a in result.app("server", events.APP_ACCEPT)}
    assert len(accepted) == count
    paths = {p.conn: p.states for p in connview.paths(result.records, "server")}
    assert paths.keys() == accepted
    wrong = {conn: states for conn, states in paths.items() if states != SERVER_PATH}
    assert not wrong, f"{len(wrong)} of {count} connections: {sorted(wrong.items())[:3]}"
