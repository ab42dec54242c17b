"""Faults through the proxy between two real kernels.

Each test asserts on both halves of the story together: what the proxy did
to which segment (its ``segment`` events), and what each kernel then reported
about its socket (the observers' ``tcp_state`` events).  Retransmission
times come from the kernels: the first SYN and SYN-ACK retransmits wait the
initial RTO (1 s, RFC 6298 §2.1, TCP_TIMEOUT_INIT), later ones at least
TCP_RTO_MIN (200 ms).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from proxy import control
from tcplab import events, runner, topology

DEADLINE = 60
TCP_TIMEOUT_INIT = 1.0  # include/net/tcp.h
TCP_RTO_MIN = 0.2  # include/net/tcp.h


async def run(*proxy_args: str, **kw: Any) -> runner.RunResult:
    opts = runner.RunOptions(proxy_args=proxy_args, observe_for=kw.pop("observe_for", 1.0), **kw)
    with trio.fail_after(DEADLINE), topology.lab() as lab:
        result = await runner.run_in_lab(lab, opts)
    assert not [s for s in result.stray if "Traceback" in s], "\n".join(result.stray)
    assert result.proxy_status == 0
    return result


def segs(
    result: runner.RunResult, tag: str | None = None, dir: str | None = None
) -> list[dict[str, Any]]:
    return [
        e
        for e in result.of("proxy", events.SEGMENT)
        if (tag is None or tag in e["tags"]) and (dir is None or e["dir"] == dir)
    ]


def states(result: runner.RunResult, component: str) -> list[dict[str, Any]]:
    return [e for e in result.of(component, events.TCP_STATE) if "-" in e.get("conn", "")]


def entered(result: runner.RunResult, component: str, state: str) -> dict[str, Any]:
    (event,) = [e for e in states(result, component) if e["new"] == state]
    return event


def left(result: runner.RunResult, component: str, state: str) -> dict[str, Any]:
    (event,) = [e for e in states(result, component) if e["old"] == state]
    return event


def conversation_ok(result: runner.RunResult) -> bool:
    done = result.of("client", events.CONVERSATION_DONE)
    return bool(done) and all(d["ok"] for d in done) and result.client_status == 0


async def test_drop_first_syn_client_retransmits_after_initial_rto() -> None:
    result = await run("--drop", "syn@1")
    first, again = segs(result, "syn")
    assert (first["verdict"], again["verdict"]) == ("drop", "pass")
    assert "retransmit" in again["tags"]
    gap = again["ts"] - first["ts"]
    assert TCP_TIMEOUT_INIT * 0.9 < gap < TCP_TIMEOUT_INIT * 1.5, gap
    # the client sat in SYN_SENT through it, and the connection completed
    syn_sent = left(result, "client", "SYN_SENT")
    assert syn_sent["source"] == "poll" and syn_sent["in_old_ms"] > 900
    assert conversation_ok(result)


async def test_drop_first_syn_ack_server_retransmits_from_syn_recv() -> None:
    result = await run("--drop", "syn-ack@1")
    # the server's timer resends it; the client's retransmitted SYN may too
    first, again = segs(result, "syn-ack")[:2]
    assert (first["verdict"], again["verdict"]) == ("drop", "pass")
    assert again["tags"] == ["syn-ack", "retransmit"]
    assert TCP_TIMEOUT_INIT * 0.9 < again["ts"] - first["ts"] < TCP_TIMEOUT_INIT * 1.5
    syn_recv = entered(result, "server", "SYN_RECV")
    assert syn_recv["source"] == "poll"  # a request socket, held for a second
    assert left(result, "server", "SYN_RECV")["ts"] > again["ts"]
    assert conversation_ok(result)


async def test_drop_handshake_ack_server_waits_in_syn_recv() -> None:
    # the client's data (and its retransmissions) are held back 500 ms, so
    # for that long the server has nothing to leave SYN_RECV with
    result = await run("--drop", "handshake-ack@1", "--delay", "client:data=500ms")
    (ack,) = segs(result, "handshake-ack")
    assert ack["verdict"] == "drop"
    client_established = entered(result, "client", "ESTABLISHED")
    server_syn_recv = entered(result, "server", "SYN_RECV")
    server_established = entered(result, "server", "ESTABLISHED")
    assert server_syn_recv["source"] == "poll"
    # the client is ESTABLISHED while the server is still in SYN_RECV
    assert client_established["ts"] < server_established["ts"]
    assert server_established["ts"] - client_established["ts"] > 0.4
    data = segs(result, "data", "c2s")[0]
    assert data["verdict"] == "delay"
    assert conversation_ok(result)


async def test_drop_client_fin_retransmitted_from_fin_wait1() -> None:
    result = await run("--drop", "client:fin@1", server_close="linger:300ms")
    first, again = segs(result, "fin", "c2s")
    assert (first["verdict"], again["verdict"]) == ("drop", "pass")
    assert "retransmit" in again["tags"] and again["seq"] == first["seq"]
    assert again["ts"] - first["ts"] >= TCP_RTO_MIN * 0.9
    fin_wait1 = left(result, "client", "FIN_WAIT1")
    assert fin_wait1["source"] == "poll" and fin_wait1["in_old_ms"] >= TCP_RTO_MIN * 1000 * 0.9
    assert fin_wait1["ts"] > again["ts"]
    # the server saw the FIN only the second time
    assert entered(result, "server", "CLOSE_WAIT")["ts"] > again["ts"]


async def test_drop_last_ack_server_retransmits_fin_client_reacks_from_time_wait() -> None:
    result = await run("--drop", "last-ack@1")
    acks = segs(result, "last-ack")
    assert [a["verdict"] for a in acks] == ["drop", "pass"]
    assert "retransmit" in acks[1]["tags"]
    server_fins = segs(result, "fin", "s2c")
    assert len(server_fins) == 2 and "retransmit" in server_fins[1]["tags"]
    # the server waited in LAST_ACK for its retransmission timer
    last_ack = left(result, "server", "LAST_ACK")
    assert last_ack["source"] == "poll" and last_ack["in_old_ms"] >= TCP_RTO_MIN * 1000 * 0.9
    # the client re-ACKed from TIME_WAIT: it was there before the second FIN came
    assert entered(result, "client", "TIME_WAIT")["ts"] < server_fins[1]["ts"]
    assert last_ack["ts"] > acks[1]["ts"]


async def test_hold_server_fin_until_released_through_the_control_api() -> None:
    held = trio.Event()

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == events.SEGMENT and event.get("verdict") == "hold":
            held.set()

    released_at: list[float] = []
    with trio.fail_after(DEADLINE), topology.lab() as lab:
        opts = runner.RunOptions(
            proxy_args=("--hold", "server:fin"), server_close="immediate", observe_for=1.0
        )
        async with trio.open_nursery() as nursery:

            async def release() -> None:
                await held.wait()
                await trio.sleep(0.5)  # the client waits in FIN_WAIT2 meanwhile
                answer = await trio.to_thread.run_sync(
                    control.request, runner.control_path(lab), {"op": "release"}
                )
                assert answer["ok"] and answer["released"] >= 1
                released_at.append(answer["released"])

            nursery.start_soon(release)
            result = await runner.run_in_lab(lab, opts, on_event=on_event)
    # the FIN and its retransmissions were all held, then all let go
    verdicts = [f["verdict"] for f in segs(result, "fin", "s2c")]
    held_count = verdicts.count("hold")
    assert held_count >= 1 and verdicts == ["hold"] * held_count + ["release"] * held_count
    assert released_at == [held_count]
    first_release = next(f for f in segs(result, "fin", "s2c") if f["verdict"] == "release")
    fin_wait2 = left(result, "client", "FIN_WAIT2")
    assert fin_wait2["in_old_ms"] > 400 and fin_wait2["ts"] > first_release["ts"]
    # the server sat in LAST_ACK until its FIN went through
    last_ack = left(result, "server", "LAST_ACK")
    assert last_ack["new"] == "CLOSED" and last_ack["ts"] > first_release["ts"]
    # The released retransmissions reach a client already in TIME_WAIT; its
    # re-ACKs reach a server whose socket is gone, which answers RST — and an
    # RST kills a TIME_WAIT socket (RFC 1337's "assassination"; Linux's
    # tcp_rfc1337 is 0).  So TIME_WAIT may be too short to poll, and CLOSED
    # straight from FIN_WAIT2 is what the client's observer may report.
    assert fin_wait2["new"] in ("TIME_WAIT", "CLOSED")
    changes = result.of("proxy", events.RULES_CHANGED)
    assert [c["op"] for c in changes] == ["release"]


async def test_reset_rule_tears_both_sockets_down_by_rst() -> None:
    # the server's echo triggers it: by then both sides have accepted and
    # polled their ESTABLISHED sockets
    result = await run("--reset", "server:data@1", server_close="immediate")
    verdicts = [(s["verdict"], s["dir"]) for s in segs(result, "rst")]
    assert sorted(verdicts) == [("inject", "c2s"), ("inject", "s2c")]
    assert segs(result, "data", "s2c")[0]["verdict"] == "reset"
    for side in ("client", "server"):
        established = left(result, side, "ESTABLISHED")
        assert established["new"] == "CLOSED", established
        assert not [e for e in states(result, side) if e["new"] == "TIME_WAIT"]
    errors = {e["how"] for e in result.of("client", events.APP_ERROR)}
    assert "ECONNRESET" in errors
    assert result.client_status == 1


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
async def test_pcapng_read_by_tshark_matches_the_counters(tmp_path: Path) -> None:
    pcap = tmp_path / "run.pcapng"
    result = await run("--drop", "syn-ack@1", pcap=str(pcap))
    (done,) = result.of("proxy", events.DAEMON_DONE)
    counters = done["counters"]
    tshark = await trio.run_process(
        ["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.comment", "-e", "tcp.flags.str"],
        capture_stdout=True,
        capture_stderr=True,
    )
    out = tshark.stdout.decode().splitlines()
    assert len(out) == counters["frames_in"] == done["captured"]
    dropped = [line for line in out if "verdict=drop" in line]
    assert len(dropped) == 1 and "rule=drop-syn-ack@1" in dropped[0]
    assert len([line for line in out if "verdict=" in line]) == counters["segments"]


async def test_express_lane_carries_the_data_and_gives_the_teardown_back() -> None:
    """With --log-segments control and no rule on data, the established
    connection rides the kernel lane; its FIN takes it back to the proxy, so
    every teardown segment is still seen, tagged and logged."""
    result = await run(
        "--log-segments", "control", send=("x" * 1000,) * 50, server_close="immediate"
    )
    (done,) = result.of("proxy", events.DAEMON_DONE)
    assert done["counters"]["express_connections"] == 1
    assert done["counters"]["express_parked"] >= 1
    assert not done.get("express_errors")
    # 50 echoes of 1,001 bytes each way, and the proxy forwarded few of them
    assert done["counters"]["segments"] < 50
    assert conversation_ok(result)
    tags = [tuple(s["tags"]) for s in segs(result)]
    assert tags[:3] == [("syn",), ("syn-ack",), ("handshake-ack",)]
    assert tags[-3:] == [("fin",), ("fin", "fin-ack"), ("fin-ack", "last-ack")]
    assert entered(result, "client", "TIME_WAIT")["source"] == "poll"
