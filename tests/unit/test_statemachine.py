"""Trace transitions and snapshots, merged → state-change events, with what may be
inferred between polls."""

from __future__ import annotations

import pytest

from core.events import TcpState
from daemons.statemachine import SocketTracker
from daemons.tracking import Snapshot, TraceTransition

CLIENT = ("192.0.2.1", 40312, "198.51.100.1", 7007)
SERVER = ("198.51.100.1", 7007, "192.0.2.1", 40312)
LISTENER = ("0.0.0.0", 7007, "0.0.0.0", 0)


def steps(tracker: SocketTracker, key: tuple[str, int, str, int], states: list[str | None]):
    """Feed one socket's state per poll (None = gone); return (old, new, source)."""
    out = []
    for i, state in enumerate(states):
        snap = {} if state is None else {key: Snapshot(key, state)}
        out += [(c.old, c.new, c.source) for c in tracker.update(snap, float(i))]
    return out


def test_every_state_seen_is_reported_as_polled() -> None:
    t = SocketTracker(vouched=True)
    seen = steps(
        t, CLIENT, ["SYN_SENT", "ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "TIME_WAIT", None]
    )
    assert seen == [
        ("CLOSED", "SYN_SENT", "poll"),
        ("SYN_SENT", "ESTABLISHED", "poll"),
        ("ESTABLISHED", "FIN_WAIT1", "poll"),
        ("FIN_WAIT1", "FIN_WAIT2", "poll"),
        ("FIN_WAIT2", "TIME_WAIT", "poll"),
        ("TIME_WAIT", "CLOSED", "poll"),
    ]


def test_active_open_seen_established_infers_syn_sent() -> None:
    t = SocketTracker(vouched=True)
    assert steps(t, CLIENT, ["ESTABLISHED"]) == [
        ("CLOSED", "SYN_SENT", "inferred"),
        ("SYN_SENT", "ESTABLISHED", "poll"),
    ]


def test_passive_open_infers_syn_recv() -> None:
    t = SocketTracker(passive_ports=[7007], vouched=True)
    assert steps(t, SERVER, ["ESTABLISHED"]) == [
        ("CLOSED", "SYN_RECV", "inferred"),
        ("SYN_RECV", "ESTABLISHED", "poll"),
    ]


def test_quick_passive_close_is_inferred_from_the_owners_facts() -> None:
    t = SocketTracker(passive_ports=[7007], vouched=True)
    steps(t, SERVER, ["ESTABLISHED"])
    t.note(SERVER, "rcv_fin")
    t.note(SERVER, "snd_fin")
    changes = t.update({}, 10.0)
    assert [(c.old, c.new, c.source) for c in changes] == [
        ("ESTABLISHED", "CLOSE_WAIT", "inferred"),
        ("CLOSE_WAIT", "LAST_ACK", "inferred"),
        ("LAST_ACK", "CLOSED", "poll"),
    ]
    # time in the old state is known only for the state we saw; every change
    # happened by the time of this poll
    assert changes[0].in_old_ms == 10000.0
    assert changes[1].in_old_ms is None
    assert {c.ts for c in changes} == {10.0}


def test_without_facts_a_vanished_socket_is_reported_as_seen() -> None:
    t = SocketTracker(passive_ports=[7007], vouched=False)
    assert steps(t, SERVER, ["ESTABLISHED", None])[-1] == ("ESTABLISHED", "CLOSED", "poll")


def test_a_connection_never_accepted_is_nobodys_and_may_end_in_a_reset() -> None:
    # still in the accept queue when the listener closed: the kernel reset it,
    # and no program was there to say so
    queued = SocketTracker(passive_ports=[7007], vouched=True)
    assert steps(queued, SERVER, ["CLOSE_WAIT", None])[-1] == ("CLOSE_WAIT", "CLOSED", "poll")
    # accepted, and the program knows of no reset: it closed, so LAST_ACK
    accepted = SocketTracker(passive_ports=[7007], vouched=True)
    accepted.own(SERVER)
    assert steps(accepted, SERVER, ["CLOSE_WAIT", None])[-2:] == [
        ("CLOSE_WAIT", "LAST_ACK", "inferred"),
        ("LAST_ACK", "CLOSED", "poll"),
    ]


def test_facts_about_a_socket_that_ended_are_not_a_new_ones_with_its_four_tuple() -> None:
    t = SocketTracker(passive_ports=[7007], vouched=True, traced=True)
    for old, new, ts in (("LISTEN", "SYN_RECV", 0.1), ("SYN_RECV", "ESTABLISHED", 0.2)):
        t.trace(TraceTransition(SERVER, 1, old, new, ts))
    t.own(SERVER)
    t.trace(TraceTransition(SERVER, 1, "ESTABLISHED", "CLOSED", 0.5))
    # the program closes the socket that ended, after the kernel did
    t.note(SERVER, "snd_fin")
    t.note(SERVER, "closed")
    # an old duplicate SYN of the same four-tuple: a request socket (no
    # tracepoint for it), seen by one poll, then gone
    seen = t.update({SERVER: Snapshot(SERVER, "SYN_RECV")}, 2.0) + t.update({}, 3.0)
    assert [(c.old, c.new, c.source) for c in seen] == [
        ("CLOSED", "SYN_RECV", "poll"),
        ("SYN_RECV", "CLOSED", "poll"),
    ]


def test_a_dump_begun_before_the_handover_lookup_cannot_take_the_minisock_back() -> None:
    # the server closed first; its orphan's FIN_WAIT2 was handed to a
    # timewait minisock, which the peer's FIN had already moved to TIME_WAIT
    # when the lookup found it; a dump begun before that still lists it in
    # its FIN_WAIT2 substate
    t = SocketTracker(passive_ports=[7007], vouched=True, traced=True)
    for old, new, ts in (
        ("LISTEN", "SYN_RECV", 0.1),
        ("SYN_RECV", "ESTABLISHED", 0.2),
        ("ESTABLISHED", "FIN_WAIT1", 0.3),
        ("FIN_WAIT1", "FIN_WAIT2", 0.4),
    ):
        t.trace(TraceTransition(SERVER, 1, old, new, ts))
    tw = Snapshot(SERVER, "TIME_WAIT", timer="timewait", expires_ms=60000)
    handed = t.trace(TraceTransition(SERVER, 1, "FIN_WAIT2", "CLOSED", 0.5), tw, 0.52)
    assert [(c.old, c.new) for c in handed][-1] == ("FIN_WAIT2", "TIME_WAIT")
    stale = Snapshot(SERVER, "FIN_WAIT2", timer="timewait", expires_ms=59000)
    assert t.update({SERVER: stale}, 0.53, started=0.51) == []
    assert t.state_of(SERVER) == "TIME_WAIT"


def test_reset_fact_prefers_the_rst_path() -> None:
    t = SocketTracker(passive_ports=[7007], vouched=True)
    steps(t, SERVER, ["ESTABLISHED"])
    t.note(SERVER, "rcv_fin")
    t.note(SERVER, "reset")
    changes = [(c.old, c.new, c.source) for c in t.update({}, 5.0)]
    assert changes == [
        ("ESTABLISHED", "CLOSE_WAIT", "inferred"),
        ("CLOSE_WAIT", "CLOSED", "poll"),
    ]


def test_ambiguous_middle_is_not_invented() -> None:
    # ESTABLISHED → TIME_WAIT: via FIN_WAIT2, or via CLOSING (simultaneous close).
    t = SocketTracker(vouched=True)
    steps(t, CLIENT, ["ESTABLISHED"])
    t.note(CLIENT, "snd_fin")
    changes = [
        (c.old, c.new, c.source)
        for c in t.update({CLIENT: Snapshot(CLIENT, "TIME_WAIT", "timewait", 59000)}, 3.0)
    ]
    assert changes == [
        ("ESTABLISHED", "FIN_WAIT1", "inferred"),
        ("FIN_WAIT1", "TIME_WAIT", "poll"),
    ]


def test_time_wait_timer_is_carried() -> None:
    t = SocketTracker(vouched=True)
    steps(t, CLIENT, ["FIN_WAIT2"])
    (change,) = t.update({CLIENT: Snapshot(CLIENT, "TIME_WAIT", "timewait", 59876)}, 2.0)
    assert change.timer == "timewait"
    assert change.expires_ms == 59876


def test_listener_has_its_own_conn_and_no_inference() -> None:
    t = SocketTracker(passive_ports=[7007], vouched=True)
    (change,) = t.update({LISTENER: Snapshot(LISTENER, "LISTEN")}, 0.0)
    assert (change.old, change.new, change.conn) == (
        "CLOSED",
        "LISTEN",
        "0.0.0.0:7007",
    )


def test_kernel_close_state_is_closed_and_reported_once() -> None:
    t = SocketTracker(vouched=False)
    assert steps(t, CLIENT, ["ESTABLISHED", "CLOSE", None])[-1] == ("ESTABLISHED", "CLOSED", "poll")


def test_reused_tuple_starts_a_new_life() -> None:
    t = SocketTracker(vouched=False)
    seen = steps(t, CLIENT, ["SYN_SENT", None, "SYN_SENT"])
    assert seen[-1] == ("CLOSED", "SYN_SENT", "poll")


def test_connection_ids_are_client_first_on_both_sides() -> None:
    srv = SocketTracker(passive_ports=[7007])
    cli = SocketTracker()
    (a,) = srv.update({SERVER: Snapshot(SERVER, "SYN_RECV")}, 0)
    (b,) = cli.update({CLIENT: Snapshot(CLIENT, "SYN_SENT")}, 0)
    assert a.conn == b.conn == "192.0.2.1:40312-198.51.100.1:7007"


def test_unknown_fact_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fact"):
        SocketTracker().note(CLIENT, "maybe")  # type: ignore[arg-type]


def test_a_polled_change_happened_between_the_dump_before_and_this_one() -> None:
    t = SocketTracker(vouched=True)
    t.update({CLIENT: Snapshot(CLIENT, "ESTABLISHED")}, 1.0)
    (change,) = t.update({CLIENT: Snapshot(CLIENT, "FIN_WAIT1")}, 2.0, seen_after=1.0)
    assert (change.ts, change.seen_after, change.earliest) == (2.0, 1.0, 1.0)


# --- with the tracepoint ---------------------------------------------------------

PORTLESS = ("192.0.2.1", 0, "198.51.100.1", 7007)
SK = 0xFFFF888106438940


def tr(
    key: tuple[str, int, str, int], old: str, new: str, ts: float, sk: int = SK
) -> TraceTransition:
    return TraceTransition(key, sk, old, new, ts)


def said(records: list[TcpState]) -> list[tuple[str, str, str, str]]:
    return [(r.conn, r.old, r.new, r.source) for r in records]


def test_syn_sent_before_the_port_is_tied_to_the_socket_by_its_next_event() -> None:
    t = SocketTracker(traced=True)
    assert t.trace(tr(PORTLESS, "CLOSED", "SYN_SENT", 1.0)) == []
    out = t.trace(tr(CLIENT, "SYN_SENT", "ESTABLISHED", 1.5))
    conn = "192.0.2.1:40312-198.51.100.1:7007"
    assert said(out) == [
        (conn, "CLOSED", "SYN_SENT", "trace"),
        (conn, "SYN_SENT", "ESTABLISHED", "trace"),
    ]
    assert [r.ts for r in out] == [1.0, 1.5]
    assert out[1].in_old_ms == 500.0


def test_the_owner_saying_connect_ties_syn_sent_at_once() -> None:
    t = SocketTracker(traced=True)
    assert t.trace(tr(PORTLESS, "CLOSED", "SYN_SENT", 1.0)) == []
    (syn_sent,) = t.connecting(CLIENT)
    assert (syn_sent.conn, syn_sent.new, syn_sent.ts) == (
        "192.0.2.1:40312-198.51.100.1:7007",
        "SYN_SENT",
        1.0,
    )
    # and the other way round: the owner first, then the trace event
    t2 = SocketTracker(traced=True)
    other = ("192.0.2.1", 40400, "198.51.100.1", 7007)
    assert t2.connecting(other) == []
    (late,) = t2.trace(tr(PORTLESS, "CLOSED", "SYN_SENT", 2.0, sk=7))
    assert late.conn == "192.0.2.1:40400-198.51.100.1:7007" and late.ts == 2.0


def test_two_connects_in_a_row_are_tied_in_order() -> None:
    t = SocketTracker(traced=True)
    first = ("192.0.2.1", 40001, "198.51.100.1", 7007)
    second = ("192.0.2.1", 40002, "198.51.100.1", 7007)
    t.trace(tr(PORTLESS, "CLOSED", "SYN_SENT", 1.0, sk=1))
    t.trace(tr(PORTLESS, "CLOSED", "SYN_SENT", 2.0, sk=2))
    (a,) = t.connecting(first)
    (b,) = t.connecting(second)
    assert (a.ts, b.ts) == (1.0, 2.0)


def test_a_connect_that_fails_before_it_has_a_port_is_still_reported() -> None:
    t = SocketTracker(traced=True)
    assert t.trace(tr(PORTLESS, "CLOSED", "SYN_SENT", 1.0)) == []
    out = t.trace(tr(PORTLESS, "SYN_SENT", "CLOSED", 1.1))
    assert said(out) == [
        ("192.0.2.1:0-198.51.100.1:7007", "CLOSED", "SYN_SENT", "trace"),
        ("192.0.2.1:0-198.51.100.1:7007", "SYN_SENT", "CLOSED", "trace"),
    ]


def test_a_polled_syn_sent_waits_for_its_trace_event() -> None:
    t = SocketTracker(traced=True)
    t.trace(tr(PORTLESS, "CLOSED", "SYN_SENT", 1.0))
    assert t.update({CLIENT: Snapshot(CLIENT, "SYN_SENT")}, 1.1, 1.0) == []
    assert said(t.trace(tr(CLIENT, "SYN_SENT", "ESTABLISHED", 1.2)))[0][2] == "SYN_SENT"


def test_the_trace_owns_full_sockets_and_a_poll_only_confirms() -> None:
    t = SocketTracker(traced=True)
    t.connecting(CLIENT)
    t.trace(tr(PORTLESS, "CLOSED", "SYN_SENT", 1.0))
    t.trace(tr(CLIENT, "SYN_SENT", "ESTABLISHED", 1.1))
    assert t.update({CLIENT: Snapshot(CLIENT, "ESTABLISHED")}, 1.2, 1.0) == []
    # a dump that lags behind the trace says nothing either
    t.trace(tr(CLIENT, "ESTABLISHED", "FIN_WAIT1", 1.3))
    assert t.update({CLIENT: Snapshot(CLIENT, "ESTABLISHED")}, 1.35, 1.2, started=1.25) == []
    assert t.live == {CLIENT: "FIN_WAIT1"}


def test_handover_to_a_timewait_minisock() -> None:
    t = SocketTracker(traced=True)
    t.connecting(CLIENT)
    for old, new, ts in [
        ("CLOSED", "SYN_SENT", 1.0),
        ("SYN_SENT", "ESTABLISHED", 1.1),
        ("ESTABLISHED", "FIN_WAIT1", 2.0),
        ("FIN_WAIT1", "FIN_WAIT2", 2.1),
    ]:
        t.trace(tr(PORTLESS if new == "SYN_SENT" else CLIENT, old, new, ts))
    tw = Snapshot(CLIENT, "TIME_WAIT", "timewait", 60000)
    out = t.trace(tr(CLIENT, "FIN_WAIT2", "CLOSED", 3.0), successor=tw, looked_up=3.0001)
    full, minisock = out
    # the kernel's transition, as the tracepoint said it ...
    assert (full.old, full.new, full.source, full.handed_to, full.handed_state) == (
        "FIN_WAIT2", "CLOSED", "trace", "timewait", "TIME_WAIT"
    )  # fmt: skip
    assert full.shown_new == "TIME_WAIT" and full.in_old_ms == 900.0
    # ... and the minisock's state, which only sock_diag sees
    assert (minisock.old, minisock.new, minisock.source, minisock.sock) == (
        "FIN_WAIT2", "TIME_WAIT", "poll", "timewait"
    )  # fmt: skip
    assert (minisock.seen_after, minisock.ts, minisock.expires_ms) == (3.0, 3.0001, 60000)
    # the next dumps confirm; the end of TIME_WAIT is theirs to report
    assert t.update({CLIENT: tw}, 3.1, 3.05) == []
    (end,) = t.update({}, 63.1, 63.0)
    assert (end.old, end.new, end.source, end.in_old_ms) == ("TIME_WAIT", "CLOSED", "poll", 60100.0)


BORN_AND_CLOSING = [
    ("CLOSED", "SYN_SENT", 0.5),
    ("SYN_SENT", "ESTABLISHED", 0.6),
    ("ESTABLISHED", "FIN_WAIT1", 1.0),
]
"""A client socket's life under the trace up to its close()."""


def test_a_socket_first_heard_of_mid_life_is_not_this_namespaces() -> None:
    """Tracepoints carry no namespace: a socket of a removed namespace that
    had these addresses (a reused lab slot) is closed by the kernel later.
    Neither dumped nor born under the trace, it is not reported."""
    t = SocketTracker(traced=True)
    assert t.trace(tr(CLIENT, "ESTABLISHED", "CLOSED", 1.0)) == []
    assert t.trace(tr(CLIENT, "FIN_WAIT1", "FIN_WAIT2", 1.1)) == []
    assert t.live == {}
    # a socket the dumps know, or one born under the trace, is reported
    t.update({SERVER: Snapshot(SERVER, "ESTABLISHED")}, 2.0)
    (closed,) = t.trace(tr(SERVER, "ESTABLISHED", "CLOSED", 2.5))
    assert (closed.old, closed.new, closed.source) == ("ESTABLISHED", "CLOSED", "trace")
    (born,) = t.trace(tr(CLIENT, "CLOSED", "SYN_SENT", 3.0))
    assert (born.old, born.new) == ("CLOSED", "SYN_SENT")


def test_an_orphans_fin_wait2_moves_into_a_minisock_without_a_change() -> None:
    t = SocketTracker(traced=True)
    for old, new, ts in BORN_AND_CLOSING:
        t.trace(tr(CLIENT, old, new, ts))
    t.trace(tr(CLIENT, "FIN_WAIT1", "FIN_WAIT2", 2.0))
    fw2 = Snapshot(CLIENT, "FIN_WAIT2", "timewait", 59000)
    (full,) = t.trace(tr(CLIENT, "FIN_WAIT2", "CLOSED", 2.0001), successor=fw2, looked_up=2.0002)
    assert (full.handed_to, full.handed_state, full.shown_new) == (
        "timewait", "FIN_WAIT2", "FIN_WAIT2"
    )  # fmt: skip
    assert t.live == {CLIENT: "FIN_WAIT2"}
    # the peer's FIN arrives: the minisock goes to TIME_WAIT, which a dump sees
    (change,) = t.update({CLIENT: Snapshot(CLIENT, "TIME_WAIT", "timewait", 60000)}, 5.0, 4.995)
    assert (change.old, change.new, change.source, change.sock) == (
        "FIN_WAIT2", "TIME_WAIT", "poll", "timewait"
    )  # fmt: skip
    assert change.in_old_ms == 3000.0  # since FIN_WAIT2 began, at 2.0


def test_a_request_socket_then_its_child() -> None:
    t = SocketTracker(passive_ports=[7007], traced=True)
    (request,) = t.update({SERVER: Snapshot(SERVER, "SYN_RECV", "on")}, 1.005, 1.0)
    assert (request.old, request.new, request.source, request.sock) == (
        "CLOSED", "SYN_RECV", "poll", "request"
    )  # fmt: skip
    # the handshake's ACK: the listener makes a full socket, born in SYN_RECV
    child, established = t.trace(tr(SERVER, "LISTEN", "SYN_RECV", 2.0)) + t.trace(
        tr(SERVER, "SYN_RECV", "ESTABLISHED", 2.00001)
    )
    assert (child.old, child.new, child.source, child.sock) == (
        "LISTEN", "SYN_RECV", "trace", "full"
    )  # fmt: skip
    # time in SYN_RECV runs from the request socket, not from the child
    assert established.in_old_ms == pytest.approx(995.01)
    # the request socket is gone from the next dump: nothing to say
    assert t.update({SERVER: Snapshot(SERVER, "ESTABLISHED")}, 2.1, 2.05) == []


def test_a_request_socket_that_never_completes() -> None:
    t = SocketTracker(passive_ports=[7007], traced=True)
    t.update({SERVER: Snapshot(SERVER, "SYN_RECV", "on")}, 1.0)
    (gone,) = t.update({}, 4.0, 3.9)
    assert (gone.old, gone.new, gone.source, gone.sock) == ("SYN_RECV", "CLOSED", "poll", "request")


def test_a_dump_begun_before_the_trace_closed_a_socket_does_not_revive_it() -> None:
    t = SocketTracker(traced=True)
    for old, new, ts in BORN_AND_CLOSING:
        t.trace(tr(CLIENT, old, new, ts))
    t.trace(tr(CLIENT, "FIN_WAIT1", "CLOSED", 1.5))  # a reset
    stale = {CLIENT: Snapshot(CLIENT, "FIN_WAIT1")}
    assert t.update(stale, 1.6, 1.0, started=1.4) == []
    assert t.live == {}
    # a socket with that four-tuple in a dump begun later is a new one
    (again,) = t.update({CLIENT: Snapshot(CLIENT, "SYN_SENT")}, 2.0, 1.6, started=1.9)
    assert (again.old, again.new) == ("CLOSED", "SYN_SENT")


def test_a_dump_begun_before_a_lookup_does_not_undo_it() -> None:
    # polling alone: the owner's close() looked its socket up at 2.0 and saw
    # TIME_WAIT; a dump begun at 1.9 still lists the socket in FIN_WAIT1
    t = SocketTracker(vouched=True)
    t.update({CLIENT: Snapshot(CLIENT, "FIN_WAIT1")}, 1.5)
    (seen,) = t.lookup(CLIENT, Snapshot(CLIENT, "TIME_WAIT", "timewait"), 2.0001, 1.5, started=2.0)
    assert seen.new == "TIME_WAIT"
    assert t.update({CLIENT: Snapshot(CLIENT, "FIN_WAIT1")}, 2.1, 1.5, started=1.9) == []
    assert t.live == {CLIENT: "TIME_WAIT"}
    # a socket a lookup found gone is not revived by such a dump either
    assert [r.new for r in t.lookup(CLIENT, None, 3.0001, 2.1, started=3.0)] == ["CLOSED"]
    assert t.update({CLIENT: Snapshot(CLIENT, "TIME_WAIT")}, 3.1, 2.1, started=2.9) == []


def test_eof_then_close_means_the_fin_left_from_close_wait() -> None:
    # the server read EOF, then closed, and looked only afterwards: gone.
    # Closed, an RST path would do too (FIN_WAIT1 → CLOSED…) — but the
    # peer's FIN was in before ours left, so the socket went CLOSE_WAIT → LAST_ACK
    t = SocketTracker(passive_ports=[7007], vouched=True)
    steps(t, SERVER, ["ESTABLISHED"])
    t.note(SERVER, "rcv_fin")
    t.note(SERVER, "snd_fin")
    t.note(SERVER, "closed")
    assert [(c.old, c.new, c.source) for c in t.lookup(SERVER, None, 5.0)] == [
        ("ESTABLISHED", "CLOSE_WAIT", "inferred"),
        ("CLOSE_WAIT", "LAST_ACK", "inferred"),
        ("LAST_ACK", "CLOSED", "poll"),
    ]


def test_our_fin_first_then_eof_is_not_ordered() -> None:
    # shut down writing first, EOF read afterwards: the peer's FIN may have
    # been in before ours left (read only later: CLOSE_WAIT → LAST_ACK) or
    # not (FIN_WAIT1 → CLOSING…): the order of the calls does not say
    t = SocketTracker(vouched=True)
    steps(t, CLIENT, ["ESTABLISHED"])
    t.note(CLIENT, "snd_fin")
    t.note(CLIENT, "rcv_fin")
    t.note(CLIENT, "closed")
    assert [(c.old, c.new) for c in t.update({}, 5.0)] == [("ESTABLISHED", "CLOSED")]


def test_a_close_after_a_reset_sent_no_fin() -> None:
    # ECONNRESET, then close(): the connection ended by the RST
    t = SocketTracker(passive_ports=[7007], vouched=True)
    steps(t, SERVER, ["ESTABLISHED"])
    t.note(SERVER, "reset")
    t.note(SERVER, "closed")
    assert [(c.old, c.new) for c in t.lookup(SERVER, None, 5.0)] == [("ESTABLISHED", "CLOSED")]


def test_a_dump_by_its_differences_says_what_the_whole_dump_says() -> None:
    whole = SocketTracker(passive_ports=[7007], vouched=True)
    parts = SocketTracker(passive_ports=[7007], vouched=True)
    other = ("198.51.100.1", 7007, "192.0.2.1", 40313)
    dumps: list[dict[tuple[str, int, str, int], str]] = [
        {SERVER: "SYN_RECV", other: "ESTABLISHED"},
        {SERVER: "ESTABLISHED", other: "ESTABLISHED"},
        {SERVER: "CLOSE_WAIT"},
        {},
    ]
    previous: dict[tuple[str, int, str, int], str] = {}
    for i, dump in enumerate(dumps):
        snaps = {k: Snapshot(k, s) for k, s in dump.items()}
        a = whole.update(snaps, float(i), float(i) - 0.5)
        changed = {k: v for k, v in snaps.items() if previous.get(k) != v.state}
        missing = [k for k in parts.known() if k not in snaps]
        b = parts.update_changed(changed, missing, float(i), float(i) - 0.5)
        assert a == b
        previous = dict(dump)
    assert whole.live == parts.live == {}


def test_a_slow_dump_revives_none_of_thousands_closed_while_it_ran() -> None:
    # a burst: 6,000 connections close (trace) while one dump, begun before,
    # is still on its way; when it is taken in at last, it lists them all as
    # they were — none may come back to life
    t = SocketTracker(passive_ports=[7007], traced=True)
    keys = [("198.51.100.1", 7007, "192.0.2.1", 10_000 + n) for n in range(6000)]
    for n, key in enumerate(keys):
        t.trace(TraceTransition(key, n + 1, "LISTEN", "SYN_RECV", 1.0))
        t.trace(TraceTransition(key, n + 1, "SYN_RECV", "ESTABLISHED", 1.0))
    for n, key in enumerate(keys):
        t.trace(TraceTransition(key, n + 1, "ESTABLISHED", "CLOSED", 3.0))
    stale = {key: Snapshot(key, "ESTABLISHED") for key in keys}
    assert t.update(stale, 4.0, 1.5, started=2.0) == []
    assert t.live == {}
    # a dump begun after the closes: the same four-tuple again is a new life
    (first, *_) = keys
    again = t.update({first: Snapshot(first, "SYN_RECV")}, 6.0, 4.0, started=5.0)
    assert [(c.old, c.new) for c in again] == [("CLOSED", "SYN_RECV")]
