"""One tracked socket: the records a trace transition or a polled state makes."""

from __future__ import annotations

from daemons.tracking import Snapshot, TraceTransition, Tracked, folded, merge_dump

CLIENT = ("192.0.2.1", 40312, "198.51.100.1", 7007)
SERVER = ("198.51.100.1", 7007, "192.0.2.1", 40312)
LISTENER = ("198.51.100.1", 7007, "0.0.0.0", 0)
CONN = "192.0.2.1:40312-198.51.100.1:7007"
SK = 0xFFFF888106438940


def tracked(key: tuple[str, int, str, int], state: str, role: str | None, **kw: object) -> Tracked:
    fields: dict[str, object] = {
        "key": key,
        "conn": CONN,
        "state": state,
        "since": None,
        "history": set(),
        "role": role,
        "facts": set(),
        "last": None,
    }
    fields.update(kw)
    return Tracked(**fields)  # type: ignore[arg-type]


def tr(old: str, new: str, ts: float) -> TraceTransition:
    return TraceTransition(CLIENT, SK, old, new, ts)


def test_the_kernels_close_is_closed() -> None:
    assert folded("CLOSE") == "CLOSED"
    assert folded("TIME_WAIT") == "TIME_WAIT"


def test_a_snapshot_knows_a_minisock() -> None:
    assert Snapshot(CLIENT, "TIME_WAIT").kind == "timewait"
    assert Snapshot(CLIENT, "FIN_WAIT2", "timewait").kind == "timewait"  # an orphan's
    assert Snapshot(CLIENT, "FIN_WAIT2").kind == "full"


def test_merge_dump_keeps_the_later_state_of_a_handover() -> None:
    full = Snapshot(CLIENT, "FIN_WAIT2")
    tw = Snapshot(CLIENT, "TIME_WAIT", "timewait", 60000)
    assert merge_dump([full, tw]) == {CLIENT: tw}
    assert merge_dump([tw, full]) == {CLIENT: tw}


def test_a_traced_change_is_one_record_with_the_time_in_the_old_state() -> None:
    t = tracked(CLIENT, "SYN_SENT", "active", since=1.0)
    (record,) = t.on_trace(tr("SYN_SENT", "ESTABLISHED", 1.25), None, None)
    assert (record.old, record.new, record.source, record.in_old_ms) == (
        "SYN_SENT",
        "ESTABLISHED",
        "trace",
        250.0,
    )
    assert (record.conn, record.local, record.sock) == (CONN, "192.0.2.1:40312", "full")
    assert (t.state, t.since, t.history, t.owner, t.changed_at) == (
        "ESTABLISHED",
        1.25,
        {"SYN_SENT"},
        "trace",
        1.25,
    )


def test_a_child_born_in_syn_recv_has_been_there_since_the_syn() -> None:
    t = tracked(SERVER, "CLOSED", "passive")
    t.on_trace(TraceTransition(SERVER, SK, "LISTEN", "SYN_RECV", 2.0), None, None)
    assert (t.state, t.since) == ("SYN_RECV", None)


def test_only_a_minisock_takes_a_connection_over() -> None:
    t = tracked(CLIENT, "FIN_WAIT2", "active")
    closed = tr("FIN_WAIT2", "CLOSED", 3.0)
    tw = Snapshot(CLIENT, "TIME_WAIT", "timewait", 60000)
    assert t.minisock(closed, tw) is tw
    assert t.minisock(closed, Snapshot(CLIENT, "FIN_WAIT2")) is None  # a full socket
    assert t.minisock(closed, None) is None
    assert t.minisock(tr("FIN_WAIT1", "FIN_WAIT2", 3.0), tw) is None  # not a close
    listener = tracked(LISTENER, "LISTEN", None)
    assert listener.minisock(TraceTransition(LISTENER, SK, "LISTEN", "CLOSED", 3.0), tw) is None


def test_a_hand_over_to_time_wait_is_reported_from_the_lookup() -> None:
    t = tracked(CLIENT, "FIN_WAIT2", "active", since=2.0)
    tw = Snapshot(CLIENT, "TIME_WAIT", "timewait", 60000)
    closed, moved = t.on_trace(tr("FIN_WAIT2", "CLOSED", 3.0), tw, 3.001)
    assert (closed.source, closed.handed_to, closed.handed_state) == (
        "trace",
        "timewait",
        "TIME_WAIT",
    )
    assert (moved.old, moved.new, moved.source, moved.sock) == (
        "FIN_WAIT2",
        "TIME_WAIT",
        "poll",
        "timewait",
    )
    assert (moved.ts, moved.seen_after, moved.expires_ms) == (3.001, 3.0, 60000)
    # TIME_WAIT is known from the lookup, by its time: not at the tracepoint's
    assert closed.handed_seen == 3.001
    # sock_diag speaks for the minisock from now on, which began at the hand-over
    assert (t.owner, t.sock, t.state, t.since, t.last) == ("poll", "timewait", "TIME_WAIT", 3.0, tw)


def test_an_orphans_fin_wait2_moving_to_a_minisock_is_no_change() -> None:
    t = tracked(CLIENT, "FIN_WAIT2", "active", since=2.0)
    orphan = Snapshot(CLIENT, "FIN_WAIT2", "timewait", 30000)
    (closed,) = t.on_trace(tr("FIN_WAIT2", "CLOSED", 3.0), orphan, 3.001)
    assert (closed.handed_to, closed.handed_state, closed.handed_seen) == (
        "timewait",
        "FIN_WAIT2",
        None,
    )
    assert (t.state, t.since, t.sock, t.owner) == ("FIN_WAIT2", 2.0, "timewait", "poll")


def test_a_polled_jump_reports_what_it_implies_then_the_jump() -> None:
    t = tracked(SERVER, "ESTABLISHED", "passive", since=1.0, facts={"rcv_fin"})
    records = t.on_poll(
        "LAST_ACK", Snapshot(SERVER, "LAST_ACK", "on", 200, 1), 5.0, 4.0, vouched=True
    )
    assert [(r.old, r.new, r.source, r.in_old_ms) for r in records] == [
        ("ESTABLISHED", "CLOSE_WAIT", "inferred", 4000.0),
        ("CLOSE_WAIT", "LAST_ACK", "poll", None),
    ]
    assert {(r.ts, r.seen_after) for r in records} == {(5.0, 4.0)}
    assert (records[-1].timer, records[-1].expires_ms, records[-1].retrans) == ("on", 200, 1)
    assert (t.state, t.since, t.history) == ("LAST_ACK", 5.0, {"ESTABLISHED", "CLOSE_WAIT"})


def test_what_cannot_be_implied_is_reported_as_seen() -> None:
    t = tracked(CLIENT, "FIN_WAIT1", "active")
    (record,) = t.on_poll("TIME_WAIT", None, 5.0, None, vouched=True)
    assert (record.old, record.new, record.source, record.timer) == (
        "FIN_WAIT1",
        "TIME_WAIT",
        "poll",
        "off",
    )
