"""The causal rules: which pairs they name, when a pair is broken, and how a
picture orders polled lines (synthetic records: exact times chosen here)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from core.events import App, Record, Segment, TcpReset, TcpRetransmit, TcpState
from tcplab import causality, causes, connview

CONN = "192.0.2.1:40000-198.51.100.1:7007"


def seg(ts: float, dir: str, flags: str, **kw: Any) -> Segment:
    fields: dict[str, Any] = dict(seq=0, ack=0, rseq=0, rack=0, len=0, tags=(), verdict="pass")
    fields.update(kw)
    return Segment(ts=ts, component="proxy", conn=CONN, dir=dir, flags=flags, **fields)  # type: ignore[arg-type]


def st(ts: float, side: str, old: str, new: str, source: str = "trace", **kw: Any) -> TcpState:
    return TcpState(ts=ts, component=side, conn=CONN, old=old, new=new, source=source, **kw)  # type: ignore[arg-type]


def app(ts: float, side: str, kind: str, **kw: Any) -> App:
    return App(ts=ts, component=side, kind=kind, conn=CONN, **kw)


def conversation() -> list[Record]:
    """A textbook connection with exact times: client closes first."""
    return [
        app(0.9, "client", "app_connect", returned_ts=3.5),
        st(1.0, "client", "CLOSED", "SYN_SENT"),
        seg(2.0, "c2s", "S", seq=100, tags=("syn",)),
        st(2.5, "server", "CLOSED", "SYN_RECV", "poll", seen_after=1.5, sock="request"),
        seg(3.0, "s2c", "SA", seq=500, ack=101, tags=("syn-ack",)),
        st(3.2, "client", "SYN_SENT", "ESTABLISHED"),
        seg(3.3, "c2s", "A", seq=101, ack=501, tags=("handshake-ack",)),
        st(3.5, "server", "LISTEN", "SYN_RECV"),
        st(3.6, "server", "SYN_RECV", "ESTABLISHED"),
        app(5.0, "client", "app_close", how="close"),
        st(5.1, "client", "ESTABLISHED", "FIN_WAIT1"),
        seg(5.2, "c2s", "FA", seq=101, ack=501, tags=("fin",)),
        st(5.4, "server", "ESTABLISHED", "CLOSE_WAIT"),
        app(5.5, "server", "app_recv", eof=True, bytes=0),
        seg(5.6, "s2c", "A", seq=501, ack=102, tags=("fin-ack",)),
        st(5.8, "client", "FIN_WAIT1", "FIN_WAIT2"),
        app(6.0, "server", "app_close", how="close"),
        st(6.1, "server", "CLOSE_WAIT", "LAST_ACK"),
        seg(6.2, "s2c", "FA", seq=501, ack=102, tags=("fin",)),
        st(6.4, "client", "FIN_WAIT2", "CLOSED", handed_to="timewait", handed_state="TIME_WAIT"),
        seg(6.5, "c2s", "A", seq=102, ack=502, tags=("fin-ack", "last-ack")),
        st(6.7, "server", "LAST_ACK", "CLOSED"),
    ]


def rules_of(records: list[Record]) -> set[str]:
    return {link.rule for link in causes.links(records)}


def test_a_textbook_run_names_its_pairs_and_breaks_none() -> None:
    records = conversation()
    named = rules_of(records)
    assert named >= {
        "syn_sent_before_syn",
        "connect_before_syn_sent",
        "syn_before_syn_recv",
        "syn_recv_before_syn_ack",
        "syn_ack_before_established",
        "established_before_handshake_ack",
        "ack_before_established",
        "fin_before_fin_received",
        "fin_received_before_its_ack",
        "fin_before_eof",
        "ack_of_fin_before_fin_acked",
        "close_before_fin",
        "close_before_fin_state",
        "fin_state_before_fin",
    }
    assert named <= set(causes.RULES)
    assert causality.check(records) == []


@pytest.mark.parametrize(
    ("index", "ts", "rule"),
    [
        (1, 2.01, "syn_sent_before_syn"),  # SYN_SENT after its SYN reached the middlebox
        (10, 5.3, "fin_state_before_fin"),  # FIN_WAIT1 after its FIN
        (9, 5.25, "close_before_fin"),  # close() after the FIN it sends
        (17, 6.3, "fin_state_before_fin"),  # LAST_ACK after the server's FIN
        (12, 5.15, "fin_before_fin_received"),  # CLOSE_WAIT before the client's FIN arrived
        (15, 5.55, "ack_of_fin_before_fin_acked"),  # FIN_WAIT2 before the ACK of its FIN
    ],
)
def test_an_exact_record_on_the_wrong_side_breaks_its_rule(
    index: int, ts: float, rule: str
) -> None:
    records = conversation()
    moved = dataclasses.replace(records[index], ts=ts)
    if isinstance(moved, App) and moved.returned_ts is not None:
        moved = dataclasses.replace(moved, returned_ts=ts)
    records[index] = moved
    violations = causality.check(records)
    assert rule in {v.link.rule for v in violations}
    assert all(v.by_ms > 0 for v in violations)
    assert "ms" in violations[0].describe(t0=2.0)


def test_a_poll_is_an_interval_and_breaks_a_rule_only_when_it_must() -> None:
    records = conversation()
    # the poll saw FIN_WAIT1 only after the FIN passed: fine, it may have
    # happened any time after the dump before (4.9)
    records[10] = st(5.3, "client", "ESTABLISHED", "FIN_WAIT1", "poll", seen_after=4.9)
    assert causality.check(records) == []
    # but not when the dump before already came after the FIN
    records[10] = st(5.4, "client", "ESTABLISHED", "FIN_WAIT1", "poll", seen_after=5.25)
    assert {v.link.rule for v in causality.check(records)} == {"fin_state_before_fin"}


def test_order_moves_a_polled_cause_before_its_effect_and_nothing_exact() -> None:
    records = conversation()
    polled = st(5.3, "client", "ESTABLISHED", "FIN_WAIT1", "poll", seen_after=4.9)
    records[10] = polled
    placed = causality.order(records)
    position = {id(p.record): i for i, p in enumerate(placed)}
    fin = records[11]
    assert position[id(polled)] < position[id(fin)]
    (mark,) = [p for p in placed if p.record is polled]
    assert mark.moved and mark.at < fin.ts
    assert all(not p.moved for p in placed if causality.exact(p.record))
    # the client's close() still comes first
    assert position[id(records[9])] < position[id(polled)]


def test_a_child_socket_is_not_the_connections_entry_into_syn_recv() -> None:
    # the request socket was never polled: the child (LISTEN → SYN_RECV at the
    # ACK) gives only a latest time, and is drawn before the SYN-ACK
    records = [r for i, r in enumerate(conversation()) if i != 3]
    assert causality.check(records) == []
    placed = causality.order(records)
    child = next(p for p in placed if causality.is_child(p.record))
    syn_ack = next(i for i, p in enumerate(placed) if "syn-ack" in getattr(p.record, "tags", ()))
    assert placed.index(child) < syn_ack and child.moved


def test_resets_and_retransmits_from_the_tracepoints() -> None:
    records: list[Record] = [
        app(1.0, "server", "app_close", how="abort"),
        TcpReset(ts=1.1, component="server", conn=CONN, local="s", direction="sent"),
        seg(1.2, "s2c", "RA", seq=500, ack=101, tags=("rst",)),
        TcpReset(ts=1.3, component="client", conn=CONN, local="c", direction="received"),
        st(1.3, "client", "FIN_WAIT1", "CLOSED"),
        TcpRetransmit(ts=2.0, component="client", conn=CONN, local="c", state="FIN_WAIT1"),
        seg(2.01, "c2s", "FA", tags=("fin", "retransmit")),
    ]
    assert rules_of(records) == {
        "abort_before_rst",
        "send_reset_before_rst",
        "rst_before_reset_received",
        "retransmit_before_segment",
    }
    assert causality.check(records) == []
    late = [*records[:5], dataclasses.replace(records[5], ts=2.02), records[6]]
    assert {v.link.rule for v in causality.check(late)} == {"retransmit_before_segment"}


def test_a_dropped_segment_causes_nothing_at_its_receiver() -> None:
    records = conversation()
    records[11] = dataclasses.replace(records[11], verdict="drop")  # the client's FIN lost
    again = seg(5.9, "c2s", "FA", seq=101, ack=501, tags=("fin", "retransmit"))
    records.insert(12, again)
    records[13] = st(5.95, "server", "ESTABLISHED", "CLOSE_WAIT")
    # the server reads EOF, acknowledges it, the client leaves FIN_WAIT1, only then
    for index, ts in ((14, 5.96), (15, 5.97), (16, 5.98)):
        records[index] = dataclasses.replace(records[index], ts=ts)
    (link,) = [
        x
        for x in causes.links(records)
        if x.rule == "fin_before_fin_received" and x.effect.component == "server"
    ]
    assert link.cause is again
    assert causality.check(records) == []


def test_connection_paths_fold_the_kernels_objects() -> None:
    paths = {p.component: p for p in connview.paths(conversation(), "client")}
    assert paths["client"].states == [
        "CLOSED", "SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT"
    ]  # fmt: skip
    (server,) = connview.paths(conversation(), "server")
    # request socket, then its child: one SYN_RECV
    assert server.states == [
        "CLOSED", "SYN_RECV", "ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"
    ]  # fmt: skip
    entered = paths["client"].entered("TIME_WAIT")
    assert entered is not None and entered.ts == 6.4  # the hand-over's own time
    assert connview.time_zero(conversation()) == 2.0


def test_a_hand_over_found_in_time_wait_by_a_late_lookup_may_precede_the_fin() -> None:
    """An orphan's FIN_WAIT2 goes to a minisock at the ACK of its FIN; the
    lookup that follows the tracepoint, late under load, finds TIME_WAIT:
    the peer's FIN came in between.  That is no violation — the record says
    when TIME_WAIT was seen (``handed_seen``) — but the same record claiming
    TIME_WAIT at the tracepoint itself is one."""
    handed = {"handed_to": "timewait", "handed_state": "TIME_WAIT", "sock": "full"}
    fin = seg(10.005, "s2c", "FA", tags=("fin",))
    late = st(10.0, "client", "FIN_WAIT2", "CLOSED", handed_seen=10.030, **handed)
    claimed = st(10.0, "client", "FIN_WAIT2", "CLOSED", **handed)
    assert not [v for v in causality.check([fin, late]) if v.link.effect is late]
    (violation,) = [v for v in causality.check([fin, claimed]) if v.link.effect is claimed]
    assert violation.link.rule == "fin_before_fin_received"


def test_with_syn_cookies_the_server_enters_syn_recv_after_its_syn_ack() -> None:
    """No request socket: the poller first meets the connection ESTABLISHED
    at the ACK and infers SYN_RECV there, after the SYN-ACK.  An inferred
    SYN_RECV does not say the server was in it before it answered."""
    records = [r for r in conversation() if not (isinstance(r, TcpState) and r.sock == "request")]
    records = [
        st(3.6, "server", "CLOSED", "SYN_RECV", "inferred", seen_after=3.1) if r.ts == 3.5 else r
        for r in records
        if not (isinstance(r, TcpState) and r.component == "server" and r.ts == 3.6)
    ]
    records.append(st(3.6, "server", "SYN_RECV", "ESTABLISHED", "poll", seen_after=3.1))
    assert "syn_recv_before_syn_ack" not in rules_of(records)
    assert causality.check(records) == []
