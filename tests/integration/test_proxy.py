"""Faults through the proxy between two real kernels.

Each test asserts on both halves of the story together: what the proxy did
to which segment (its ``segment`` records), and what each kernel then
reported about its socket (the observers' ``tcp_state`` records).
Retransmission times come from the kernels: the first SYN and SYN-ACK
retransmits wait the initial RTO (1 s, RFC 6298 §2.1, TCP_TIMEOUT_INIT),
later ones at least TCP_RTO_MIN (200 ms).  Gaps are measured between two
segments' kernel receive timestamps at the middlebox, or read from the
observer's time in a state; which fact caused which is the causal checker's
business (:mod:`tcplab.causality`), run on every result.  No test compares
the times at which two processes wrote their lines.
"""

from __future__ import annotations

import dataclasses
import errno
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

import proxy.__main__ as proxy_main
from core import control, events, netns, tracefs
from core.events import ConversationDone, DaemonDone, RulesChanged, Segment, TcpState
from proxy import forward, rxring
from proxy.options import ProxyOptions
from tcplab import causality, causes, connview, runner, topology
from tcplab.causality import Placed

DEADLINE = 60
TCP_TIMEOUT_INIT = 1.0  # include/net/tcp.h
TCP_RTO_MIN = 0.2  # include/net/tcp.h
TRACING = tracefs.unavailable_reason() is None


def assert_causal(result: runner.RunResult) -> None:
    violations = causality.check(result.records)
    assert not violations, [v.describe() for v in violations]


def proxy_opts(*argv: str, **kw: Any) -> ProxyOptions:
    """The proxy options ``argv`` gives, as ``python -m proxy`` parses them."""
    return dataclasses.replace(proxy_main.parse_args(list(argv)), **kw)


async def run(*proxy_args: str, pcap: str | None = None, **kw: Any) -> runner.RunResult:
    opts = runner.RunOptions(
        proxy=proxy_opts(*proxy_args, pcap=pcap), observe_for=kw.pop("observe_for", 1.0), **kw
    )
    with trio.fail_after(DEADLINE), topology.lab() as lab:
        result = await runner.run_in_lab(lab, opts)
    assert not result.stray, "\n".join(result.stray)
    assert result.proxy_status == 0
    assert_causal(result)
    return result


def segs(result: runner.RunResult, tag: str | None = None, dir: str | None = None) -> list[Segment]:
    """The proxy's segment records in the order they reached it."""
    found = [
        s
        for s in result.of("proxy", Segment)
        if (tag is None or tag in s.tags) and (dir is None or s.dir == dir)
    ]
    return sorted(found, key=lambda s: (s.ts, s.verdict == "release"))


def path(result: runner.RunResult, side: str) -> connview.ConnPath:
    (only,) = connview.paths(result.records, side)
    return only


def left(result: runner.RunResult, side: str, state: str) -> TcpState:
    record = path(result, side).left(state)
    assert record is not None, f"{side} never left {state}: {path(result, side).states}"
    return record


def entered(result: runner.RunResult, side: str, state: str) -> TcpState:
    record = path(result, side).entered(state)
    assert record is not None, f"{side} never entered {state}: {path(result, side).states}"
    return record


def caused_by(result: runner.RunResult, effect: Any, rule: str) -> Any:
    """The record that ``rule`` names as ``effect``'s cause."""
    (link,) = [x for x in causes.links(result.records) if x.effect is effect and x.rule == rule]
    return link.cause


def conversation_ok(result: runner.RunResult) -> bool:
    done = result.of("client", ConversationDone)
    return bool(done) and all(d.ok for d in done) and result.client_status == 0


async def test_drop_first_syn_client_retransmits_after_initial_rto() -> None:
    result = await run("--drop", "syn@1")
    first, again = segs(result, "syn", "c2s")
    assert (first.verdict, again.verdict) == ("drop", "pass")
    assert "retransmit" in again.tags
    gap = again.ts - first.ts
    assert TCP_TIMEOUT_INIT * 0.9 < gap < TCP_TIMEOUT_INIT * 1.5, gap
    # the client sat in SYN_SENT through it, and the connection completed
    syn_sent = left(result, "client", "SYN_SENT")
    assert syn_sent.in_old_ms is not None and syn_sent.in_old_ms > 900
    # the server's request socket came from the retransmission
    assert caused_by(result, entered(result, "server", "SYN_RECV"), "syn_before_syn_recv") is again
    assert conversation_ok(result)


async def test_drop_first_syn_ack_server_retransmits_from_syn_recv() -> None:
    result = await run("--drop", "syn-ack@1")
    # the server's timer resends it; the client's retransmitted SYN may too
    first, again = segs(result, "syn-ack")[:2]
    assert (first.verdict, again.verdict) == ("drop", "pass")
    assert again.tags == ("syn-ack", "retransmit")
    assert TCP_TIMEOUT_INIT * 0.9 < again.ts - first.ts < TCP_TIMEOUT_INIT * 1.5
    syn_recv = entered(result, "server", "SYN_RECV")
    assert syn_recv.source == "poll" and syn_recv.sock in ("request", None)
    # a request socket held for a second: it is polled, and its time is known
    established = left(result, "server", "SYN_RECV")
    assert established.in_old_ms is not None and established.in_old_ms > 900
    # the client's ESTABLISHED came from the retransmitted SYN-ACK
    client_established = entered(result, "client", "ESTABLISHED")
    cause = caused_by(result, client_established, "syn_ack_before_established")
    assert cause is again
    if TRACING:
        retransmits = [r for r in result.of("server", events.TcpRetransmit) if r.synack]
        assert retransmits, "the kernel's tcp_retransmit_synack"
    assert conversation_ok(result)


async def test_drop_handshake_ack_server_waits_in_syn_recv() -> None:
    # the client's data (and its retransmissions) are held back 500 ms, so
    # for that long the server has nothing to leave SYN_RECV with
    result = await run("--drop", "handshake-ack@1", "--delay", "client:data=500ms")
    (ack,) = segs(result, "handshake-ack")
    assert ack.verdict == "drop"
    server_syn_recv = entered(result, "server", "SYN_RECV")
    assert server_syn_recv.source == "poll"
    # the client is ESTABLISHED while the server is still in SYN_RECV, for
    # the 500 ms its data is held back
    leaving = left(result, "server", "SYN_RECV")
    assert leaving.new == "ESTABLISHED"
    assert leaving.in_old_ms is not None and leaving.in_old_ms > 400
    data = segs(result, "data", "c2s")[0]
    assert data.verdict == "delay"
    # what moved the server on was the data, once it was released
    cause = caused_by(result, leaving, "ack_before_established")
    assert isinstance(cause, Segment) and cause.verdict == "release" and cause.len > 0
    assert conversation_ok(result)


async def test_drop_client_fin_retransmitted_from_fin_wait1() -> None:
    result = await run("--drop", "client:fin@1", server_close="linger:300ms")
    first, again = segs(result, "fin", "c2s")
    assert (first.verdict, again.verdict) == ("drop", "pass")
    assert "retransmit" in again.tags and again.seq == first.seq
    assert again.ts - first.ts >= TCP_RTO_MIN * 0.9
    fin_wait1 = left(result, "client", "FIN_WAIT1")
    assert fin_wait1.in_old_ms is not None and fin_wait1.in_old_ms >= TCP_RTO_MIN * 1000 * 0.9
    # the server saw the FIN only the second time
    close_wait = entered(result, "server", "CLOSE_WAIT")
    assert caused_by(result, close_wait, "fin_before_fin_received") is again
    if TRACING:
        # the kernel said it retransmitted, on the client's lifeline, before
        # the retransmission reached the middlebox
        (retransmit,) = [
            r for r in result.of("client", events.TcpRetransmit) if r.state == "FIN_WAIT1"
        ]
        assert caused_by(result, again, "retransmit_before_segment") is retransmit


async def test_drop_last_ack_server_retransmits_fin_client_reacks_from_time_wait() -> None:
    result = await run("--drop", "last-ack@1")
    acks = segs(result, "last-ack")
    assert [a.verdict for a in acks] == ["drop", "pass"]
    assert "retransmit" in acks[1].tags
    server_fins = segs(result, "fin", "s2c")
    assert len(server_fins) == 2 and "retransmit" in server_fins[1].tags
    # the server waited in LAST_ACK for its retransmission timer
    last_ack = left(result, "server", "LAST_ACK")
    assert last_ack.in_old_ms is not None and last_ack.in_old_ms >= TCP_RTO_MIN * 1000 * 0.9
    # the client was in TIME_WAIT from the first FIN: it re-ACKed from there
    time_wait = entered(result, "client", "TIME_WAIT")
    assert caused_by(result, time_wait, "fin_before_fin_received") is server_fins[0]
    assert caused_by(result, last_ack, "ack_of_fin_before_fin_acked") is acks[1]


async def test_hold_server_fin_until_released_through_the_control_api() -> None:
    """The server's FIN is held until two copies wait (the FIN and its first
    retransmission), then both are released at once.  What follows is fixed
    by the kernel, not by timing: the first FIN puts the client in TIME_WAIT
    and its ACK closes the server's LAST_ACK socket; the second FIN is
    re-ACKed from TIME_WAIT; that re-ACK reaches a server with no socket,
    which answers RST; and the RST kills the client's TIME_WAIT (RFC 1337's
    "assassination": Linux's tcp_rfc1337 is 0).  So no TIME_WAIT is left."""
    two_held = trio.Event()
    holds = 0

    def on_event(placed: Placed) -> None:
        nonlocal holds
        record = placed.record
        if isinstance(record, Segment) and record.verdict == "hold":
            holds += 1
            if holds >= 2:
                two_held.set()

    released_at: list[int] = []
    with trio.fail_after(DEADLINE), topology.lab() as lab:
        opts = runner.RunOptions(
            proxy=proxy_opts("--hold", "server:fin"), server_close="immediate", observe_for=1.0
        )
        async with trio.open_nursery() as nursery:

            async def release() -> None:
                await two_held.wait()  # the client waits in FIN_WAIT2 meanwhile
                answer = await trio.to_thread.run_sync(
                    control.request, runner.control_path(lab), {"op": "release"}
                )
                assert answer["ok"] and answer["released"] >= 2
                released_at.append(answer["released"])

            nursery.start_soon(release)
            result = await runner.run_in_lab(lab, opts, on_event=on_event)
    assert_causal(result)
    # the FIN and its retransmissions were all held, then all let go
    fins = segs(result, "fin", "s2c")
    held_count = sum(f.verdict == "hold" for f in fins)
    assert held_count >= 2
    assert sorted(f.verdict for f in fins) == ["hold"] * held_count + ["release"] * held_count
    assert released_at == [held_count]
    releases = [f for f in fins if f.verdict == "release"]
    assert all(f.kept_ms is not None and f.kept_ms > 100 for f in releases)
    fin_wait2 = left(result, "client", "FIN_WAIT2")
    assert fin_wait2.in_old_ms is not None and fin_wait2.in_old_ms > 100
    assert left(result, "server", "LAST_ACK").new == "CLOSED"
    # after the release, in the proxy's own order: the client's ACK, its
    # re-ACK from TIME_WAIT, the server's RST to that re-ACK, and nothing more
    after = [s for s in segs(result) if s.ts > releases[-1].ts or s is releases[-1]]
    c2s_acks = [s for s in after if s.dir == "c2s" and "rst" not in s.tags]
    assert len(c2s_acks) >= 2, [(s.dir, s.tags) for s in after]
    (rst,) = [s for s in after if "rst" in s.tags]
    assert rst.dir == "s2c" and rst.verdict == "pass"
    assert after[-1] is rst, [(s.dir, s.tags) for s in after]
    # ... which killed the client's TIME_WAIT: nothing of it is left
    (stop,) = result.of("client", events.ObserverStop)
    assert [r for r in stop.remaining if r.get("state") == "TIME_WAIT"] == []
    changes = result.of("proxy", RulesChanged)
    assert [c.op for c in changes] == ["release"]


async def test_reset_rule_tears_both_sockets_down_by_rst() -> None:
    # the server's echo triggers it: by then both sides have accepted
    result = await run("--reset", "server:data@1", server_close="immediate")
    verdicts = [(s.verdict, s.dir) for s in segs(result, "rst")]
    assert sorted(verdicts) == [("inject", "c2s"), ("inject", "s2c")]
    assert segs(result, "data", "s2c")[0].verdict == "reset"
    for side in ("client", "server"):
        assert left(result, side, "ESTABLISHED").new == "CLOSED"
        assert "TIME_WAIT" not in path(result, side).states
        if TRACING:
            (received,) = [r for r in result.of(side, events.TcpReset) if r.direction == "received"]
            rst = caused_by(result, received, "rst_before_reset_received")
            assert isinstance(rst, Segment) and rst.verdict == "inject"
    errors = {e.how for e in result.app("client", events.APP_ERROR)}
    assert "ECONNRESET" in errors
    assert result.client_status == 1


@pytest.mark.skipif(shutil.which("tshark") is None, reason="tshark is not installed")
async def test_pcapng_read_by_tshark_matches_the_counters(tmp_path: Path) -> None:
    pcap = tmp_path / "run.pcapng"
    result = await run("--drop", "syn-ack@1", pcap=str(pcap))
    (done,) = result.of("proxy", DaemonDone)
    counters = done.counters or {}
    tshark = await trio.run_process(
        ["tshark", "-r", str(pcap), "-T", "fields", "-e", "frame.comment", "-e", "tcp.flags.str",
         "-e", "frame.time_epoch"],
        capture_stdout=True,
        capture_stderr=True,
    )  # fmt: skip
    out = tshark.stdout.decode().splitlines()
    assert len(out) == counters["frames_in"] == done.captured
    dropped = [line for line in out if "verdict=drop" in line]
    assert len(dropped) == 1 and "rule=drop-syn-ack@1" in dropped[0]
    assert len([line for line in out if "verdict=" in line]) == counters["segments"]
    # the capture's times are the kernel's receive times, as the records' are
    (drop,) = [s for s in segs(result) if s.verdict == "drop"]
    stamp = float(dropped[0].split("\t")[-1])
    assert abs(stamp - drop.ts) < 1e-6


async def test_reset_rule_injected_rsts_are_in_the_capture(tmp_path: Path) -> None:
    if shutil.which("tshark") is None:
        pytest.skip("tshark is not installed")
    pcap = tmp_path / "reset.pcapng"
    await run("--reset", "server:data@1", server_close="immediate", pcap=str(pcap))
    tshark = await trio.run_process(
        ["tshark", "-r", str(pcap), "-Y", "tcp.flags.reset == 1", "-T", "fields", "-e",
         "frame.comment"],
        capture_stdout=True,
        capture_stderr=True,
    )  # fmt: skip
    comments = tshark.stdout.decode().splitlines()
    assert sum("verdict=inject" in c for c in comments) == 2


async def test_express_lane_carries_the_data_and_gives_the_teardown_back() -> None:
    """With --log-segments control and no rule on data, the established
    connection rides the kernel lane; its FIN takes it back to the proxy, so
    every teardown segment is still seen, tagged and logged."""
    result = await run(
        "--log-segments", "control", send=("x" * 1000,) * 50, server_close="immediate"
    )
    (done,) = result.of("proxy", DaemonDone)
    counters = done.counters or {}
    assert counters["express_connections"] == 1
    assert counters["express_parked"] >= 1
    assert not done.express_errors
    # 50 echoes of 1,001 bytes each way, and the proxy forwarded few of them
    assert counters["segments"] < 50
    assert conversation_ok(result)
    tags = [s.tags for s in segs(result)]
    assert tags[:3] == [("syn",), ("syn-ack",), ("handshake-ack",)]
    assert tags[-3:] == [("fin",), ("fin", "fin-ack"), ("fin-ack", "last-ack")]
    assert entered(result, "client", "TIME_WAIT").shown_new == "TIME_WAIT"


async def test_rx_ring_reads_every_frame_with_the_kernels_receive_time(tmp_path: Path) -> None:
    """With --rx-ring auto the proxy reads its ports through TPACKET_V3 rings
    (no fallback logged): the conversation goes through, every segment is
    logged with the kernel's receive time, and the capture agrees."""
    pcap = tmp_path / "ring.pcapng"
    result = await run("--rx-ring", "auto", send=("x" * 1000,) * 20, pcap=str(pcap))
    fallbacks = [m for m in result.of("proxy", events.LogMessage) if m.logger == "proxy.rxring"]
    assert not fallbacks, fallbacks
    assert conversation_ok(result)
    (done,) = result.of("proxy", DaemonDone)
    counters = done.counters or {}
    assert counters["frames_in"] == done.captured
    logged = segs(result)
    assert len(logged) == counters["segments"] >= 40
    assert [s.tags for s in logged[:3]] == [("syn",), ("syn-ack",), ("handshake-ack",)]
    # the kernel stamped each frame before the proxy sent it on
    for s in logged:
        assert s.sent_ts is not None and s.ts <= s.sent_ts < s.ts + 1.0
    if shutil.which("tshark") is not None:
        tshark = await trio.run_process(
            ["tshark", "-r", str(pcap), "-Y", "tcp", "-T", "fields", "-e", "frame.time_epoch"],
            capture_stdout=True,
        )
        stamps = [float(t) for t in tshark.stdout.decode().split()]
        assert len(stamps) == len(logged)
        assert all(abs(t - s.ts) < 2e-6 for t, s in zip(stamps, logged, strict=True))


class _Log:
    """A logger that keeps what :func:`core.events.emit` writes on it."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        def write(event: str, **fields: Any) -> None:
            self.lines.append((event, fields))

        return write


def test_rx_ring_refused_falls_back_to_recvmsg_and_says_why_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A port whose ring the kernel refuses is read with recvmsg; one warning
    names every such port and the reason.  A ring the kernel gives is mapped."""
    with topology.lab() as lab, netns.inside(lab.ns("mbx")):
        ports = forward.discover(["mc0", "ms0"])[0]
        log = _Log()
        interfaces = proxy_main._open_interfaces(ports, False, True, log)
        try:
            assert all(i.rx is not None and len(i.rx.blocks) == rxring.BLOCK_NR for i in interfaces)
            assert not log.lines
        finally:
            for iface in interfaces:
                iface.close()

        def refuse(sock: object, **kw: object) -> rxring.RxRing:
            raise OSError(errno.EPERM, "no ring for this test")

        monkeypatch.setattr(rxring, "attach", refuse)
        interfaces = proxy_main._open_interfaces(ports, False, True, log)
        try:
            assert all(i.rx is None for i in interfaces)
        finally:
            for iface in interfaces:
                iface.close()
    ((event, fields),) = log.lines
    assert event == "log_message" and fields["logger"] == "proxy.rxring"
    assert fields["log_level"] == "warning"
    assert "mc0: [Errno 1] no ring for this test" in fields["message"]
    assert "ms0:" in fields["message"]
