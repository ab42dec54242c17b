"""Real conversations between real kernels: the state sequences each side's
observer reports for each close-policy pairing.

Each test says which states it allows to be ``inferred`` (too quick for the
5 ms poller on a link with no delay); every other state must have been seen
by a poll.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest
import trio

from tcplab import events, runner, topology

DEADLINE = 60


def path_of(states: list[tuple[str, str, str]]) -> list[str]:
    """The states one connection went through, in order, from its transitions."""
    out = []
    for old, new, _source in states:
        if not out:
            out.append(old)
        out.append(new)
    return out


def check(
    states: list[tuple[str, str, str]],
    expected: list[str],
    may_infer: Iterable[str] = (),
    may_skip: Iterable[str] = (),
) -> None:
    """``states`` walks exactly ``expected`` (minus ``may_skip``), and only
    ``may_infer`` states were inferred rather than seen."""
    allowed = set(may_infer)
    walked = path_of(states)
    skippable = set(may_skip)
    want = [s for s in expected if s not in skippable or s in walked]
    assert walked == want, f"expected {want}, saw {walked}"
    inferred = {new for _old, new, source in states if source == "inferred"}
    assert inferred <= allowed, f"inferred {sorted(inferred - allowed)}; allowed {sorted(allowed)}"


async def converse(
    opts: runner.RunOptions, spec: topology.LabSpec | None = None
) -> runner.RunResult:
    with trio.fail_after(DEADLINE), topology.lab(spec) as lab:
        result = await runner.run_in_lab(lab, opts)
    assert not [s for s in result.stray if "Traceback" in s], "\n".join(result.stray)
    return result


def remaining(result: runner.RunResult, component: str) -> list[str]:
    (stop,) = result.of(component, events.OBSERVER_STOP)
    return [sock["state"] for sock in stop["remaining"]]


async def test_client_active_close_textbook_teardown() -> None:
    """Client closes first, the server lingers 300 ms in CLOSE_WAIT: every
    teardown state is held long enough to be polled, except LAST_ACK (one
    RTT on a veth) which may be inferred from the server's own close."""
    result = await converse(
        runner.RunOptions(server_close="linger:300ms", client_close="active", observe_for=1.0)
    )
    assert result.client_status == 0 and result.server_status == 0
    check(
        result.states("client"),
        ["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"],
        may_infer={"SYN_SENT", "FIN_WAIT1"},
    )
    check(
        result.states("server"),
        ["CLOSED", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"],
        may_infer={"SYN_RECV", "LAST_ACK"},
    )
    # the client leaves with its TIME_WAIT still running: 60 s, minus what passed
    (stop,) = result.of("client", events.OBSERVER_STOP)
    (tw,) = stop["remaining"]
    assert tw["state"] == "TIME_WAIT"
    assert 55_000 < tw["expires_ms"] <= 60_000
    (listen,) = [e for e in result.of("server", events.TCP_STATE) if e["new"] == "LISTEN"]
    assert listen["source"] == "poll"


async def test_server_closes_at_once() -> None:
    """With the server closing as soon as it reads EOF, Linux puts the server's
    FIN on the ACK of the client's FIN: the client passes FIN_WAIT2 within one
    softirq, and the poller cannot say whether it was FIN_WAIT2 or CLOSING —
    so the jump FIN_WAIT1 → TIME_WAIT is reported as seen, not invented."""
    result = await converse(runner.RunOptions(server_close="immediate", observe_for=0.5))
    check(
        result.states("client"),
        ["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"],
        may_infer={"SYN_SENT", "FIN_WAIT1"},
        may_skip={"FIN_WAIT2"},
    )
    check(
        result.states("server"),
        ["CLOSED", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"],
        may_infer={"SYN_RECV", "CLOSE_WAIT", "LAST_ACK"},
    )
    assert remaining(result, "client") == ["TIME_WAIT"]


async def test_server_never_closes_close_wait_leak() -> None:
    result = await converse(
        runner.RunOptions(server_close="never", client_close="active", observe_for=1.0)
    )
    check(
        result.states("server"),
        ["CLOSED", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT"],
        may_infer={"SYN_RECV"},
    )
    check(
        result.states("client"),
        ["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2"],
        may_infer={"SYN_SENT", "FIN_WAIT1"},
    )
    assert remaining(result, "server") == ["CLOSE_WAIT"]
    assert remaining(result, "client") == ["FIN_WAIT2"]


@pytest.mark.parametrize("who", ["server", "client"])
async def test_abort_resets_and_leaves_no_time_wait(who: str) -> None:
    opts = runner.RunOptions(
        server_close="abort" if who == "server" else "linger:2s",
        client_close="abort" if who == "client" else "active",
        observe_for=1.0,
    )
    result = await converse(opts)
    for side in ("client", "server"):
        walked = path_of(result.states(side))
        assert "TIME_WAIT" not in walked, (side, walked)
        assert walked[-1] == "CLOSED", (side, walked)
        assert remaining(result, side) == []
    if who == "client":
        # the client never sent a FIN: the server goes from ESTABLISHED to CLOSED
        check(
            result.states("server"),
            ["CLOSED", "SYN_RECV", "ESTABLISHED", "CLOSED"],
            may_infer={"SYN_RECV"},
        )
    else:
        # the client's FIN was answered by a RST: FIN_WAIT2 ends at once, no TIME_WAIT
        check(
            result.states("client"),
            ["CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSED"],
            may_infer={"SYN_SENT", "FIN_WAIT1"},
            may_skip={"FIN_WAIT2"},
        )
        closes = result.of("server", events.APP_CLOSE)
        assert [c["how"] for c in closes if "conn" in c] == ["abort"]


async def test_server_first_gets_time_wait() -> None:
    result = await converse(
        runner.RunOptions(
            server_close="first:2", client_close="passive", send=("one", "two"), observe_for=1.0
        )
    )
    assert result.client_status == 0
    check(
        result.states("server"),
        ["CLOSED", "SYN_RECV", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"],
        may_infer={"SYN_RECV", "FIN_WAIT1"},
        may_skip={"FIN_WAIT2"},
    )
    check(
        result.states("client"),
        ["CLOSED", "SYN_SENT", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"],
        may_infer={"SYN_SENT", "CLOSE_WAIT", "LAST_ACK"},
    )
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
    got = [e for e in result.of("client", events.APP_RECV) if e.get("bytes")]
    assert sum(e["bytes"] for e in got) == len(b"hello\n") + len(b"bye\n")
    check(
        result.states("server"),
        ["CLOSED", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"],
        may_infer={"SYN_RECV", "LAST_ACK"},
    )


async def test_ipv6_conversation() -> None:
    result = await converse(runner.RunOptions(ipv6=True, observe_for=0.5))
    assert result.client_status == 0
    conns = {e["conn"] for e in result.of("client", events.TCP_STATE)}
    assert conns and all(c.startswith("[2001:db8:1::1]:") for c in conns)


async def test_refused_connection_names_the_errno() -> None:
    result = await converse(
        runner.RunOptions(port=7007, client_extra=("--connect", "198.51.100.1:7999"))
    )
    assert result.client_status == 1
    (error,) = result.of("client", events.APP_ERROR)
    assert error["how"] == "ECONNREFUSED"


async def test_many_connections_in_parallel() -> None:
    result = await converse(
        runner.RunOptions(count=20, concurrency=5, server_close="immediate", observe_for=0.5)
    )
    assert result.client_status == 0
    done = result.of("client", events.CONVERSATION_DONE)
    assert len(done) == 20 and all(d["ok"] for d in done)
    assert sorted(remaining(result, "client")) == ["TIME_WAIT"] * 20


async def test_server_survives_garbage_resets_and_silence(tmp_path: Path) -> None:
    """Hostile clients: an over-long line, a client that resets mid-message,
    one that connects and says nothing.  The server logs each and still
    serves a well-behaved client afterwards."""
    import socket
    import struct

    from tcplab import netns

    with trio.fail_after(DEADLINE), topology.lab() as lab:
        server_argv = runner.daemon_argv(
            "daemons.server",
            lab.ns("srv"),
            ["--listen", "198.51.100.1:7007", "--max-message", "64", "--idle-timeout", "300ms"],
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
                    await garbage.connect(("198.51.100.1", 7007))
                    break
                except OSError:
                    await trio.sleep(0.05)
            await garbage.send(b"\xff" * 200)
            await resetter.connect(("198.51.100.1", 7007))
            await resetter.send(b"half a line")
            resetter.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            resetter.close()
            await silent.connect(("198.51.100.1", 7007))
            # the server drops the silent one after its idle timeout: we see EOF
            assert await silent.recv(10) == b""
            garbage.close()
            silent.close()
            client = await trio.run_process(
                runner.daemon_argv(
                    "daemons.client",
                    lab.ns("cli"),
                    ["--connect", "198.51.100.1:7007", "--observe-for", "200ms"],
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
    lines = [events.parse_line(line) for line in raw.splitlines()]
    errors = {e["how"] for e in lines if e and e["event"] == events.APP_ERROR}
    assert {"EMSGSIZE", "idle"} <= errors, errors
    accepts = [e for e in lines if e and e["event"] == events.APP_ACCEPT]
    assert len(accepts) == 4
