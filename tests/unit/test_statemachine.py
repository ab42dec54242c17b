"""Snapshots → state-change events, and what may be inferred between polls."""

from __future__ import annotations

import pytest

from daemons.statemachine import Snapshot, SocketTracker, candidate_paths, implied_states

CLIENT = ("192.0.2.1", 40312, "198.51.100.1", 7007)
SERVER = ("198.51.100.1", 7007, "192.0.2.1", 40312)
LISTENER = ("0.0.0.0", 7007, "0.0.0.0", 0)


def steps(tracker: SocketTracker, key: tuple[str, int, str, int], states: list[str | None]):
    """Feed one socket's state per poll (None = gone); return (old, new, source)."""
    out = []
    for i, state in enumerate(states):
        snap = {} if state is None else {key: Snapshot(key, state)}
        out += [
            (c.record.old, c.record.new, c.record.source) for c in tracker.update(snap, float(i))
        ]
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
    assert [(c.record.old, c.record.new, c.record.source) for c in changes] == [
        ("ESTABLISHED", "CLOSE_WAIT", "inferred"),
        ("CLOSE_WAIT", "LAST_ACK", "inferred"),
        ("LAST_ACK", "CLOSED", "poll"),
    ]
    # time in the old state is known only for the state we saw
    assert changes[0].record.in_old_ms == 10000.0
    assert changes[1].record.in_old_ms is None


def test_without_facts_a_vanished_socket_is_reported_as_seen() -> None:
    t = SocketTracker(passive_ports=[7007], vouched=False)
    assert steps(t, SERVER, ["ESTABLISHED", None])[-1] == ("ESTABLISHED", "CLOSED", "poll")


def test_reset_fact_prefers_the_rst_path() -> None:
    t = SocketTracker(passive_ports=[7007], vouched=True)
    steps(t, SERVER, ["ESTABLISHED"])
    t.note(SERVER, "rcv_fin")
    t.note(SERVER, "reset")
    changes = [(c.record.old, c.record.new, c.record.source) for c in t.update({}, 5.0)]
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
        (c.record.old, c.record.new, c.record.source)
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
    assert change.record.timer == "timewait"
    assert change.record.expires_ms == 59876


def test_listener_has_its_own_conn_and_no_inference() -> None:
    t = SocketTracker(passive_ports=[7007], vouched=True)
    (change,) = t.update({LISTENER: Snapshot(LISTENER, "LISTEN")}, 0.0)
    assert (change.record.old, change.record.new, change.record.conn) == (
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
    (a,) = [c for c in srv.update({SERVER: Snapshot(SERVER, "SYN_RECV")}, 0) if True]
    (b,) = cli.update({CLIENT: Snapshot(CLIENT, "SYN_SENT")}, 0)
    assert a.record.conn == b.record.conn == "192.0.2.1:40312-198.51.100.1:7007"


@pytest.mark.parametrize(
    ("old", "new", "facts", "expected"),
    [
        ("SYN_SENT", "ESTABLISHED", set(), [[]]),
        ("ESTABLISHED", "LAST_ACK", set(), [["CLOSE_WAIT"]]),
        ("FIN_WAIT1", "CLOSED", {"snd_fin"}, [[]]),
        ("FIN_WAIT2", "CLOSED", {"snd_fin"}, [[]]),
    ],
)
def test_candidate_paths(old: str, new: str, facts: set, expected: list[list[str]]) -> None:
    paths = candidate_paths(old, new, facts=frozenset(facts), vouched=False)
    assert [p[1:-1] for p in paths] == expected


def test_implied_states_keeps_only_agreement() -> None:
    assert implied_states([["A", "B", "C", "D"], ["A", "B", "X", "D"]]) == ["B", None]
    assert implied_states([]) == []


def test_unknown_fact_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown fact"):
        SocketTracker().note(CLIENT, "maybe")  # type: ignore[arg-type]
