"""The state graph: which paths fit a polled jump, and what they imply."""

from __future__ import annotations

import pytest

from daemons.inference import EDGES, candidate_paths, implied, implied_states


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
    assert implied_states([["A", "B", "C"], ["A", "C"]]) == []  # unequal: nothing agreed


def test_a_vouched_socket_without_a_reset_did_not_end_by_rst() -> None:
    # the owner would have seen ECONNRESET: only the graceful endings fit
    # (our FIN first and an orphan's FIN_WAIT2 timing out, or the peer's first)
    paths = candidate_paths("ESTABLISHED", "CLOSED", role="passive", vouched=True)
    assert sorted(paths) == [
        ["ESTABLISHED", "CLOSE_WAIT", "LAST_ACK", "CLOSED"],
        ["ESTABLISHED", "FIN_WAIT1", "FIN_WAIT2", "CLOSED"],
    ]
    # nobody vouching: the RST is the shortest explanation
    assert candidate_paths("ESTABLISHED", "CLOSED", role="passive") == [["ESTABLISHED", "CLOSED"]]


def test_a_reset_on_record_prefers_the_rst_ending() -> None:
    paths = candidate_paths(
        "ESTABLISHED", "CLOSED", role="passive", facts=frozenset({"reset"}), vouched=True
    )
    assert paths == [["ESTABLISHED", "CLOSED"]]


def test_eof_before_our_fin_implies_last_ack() -> None:
    facts = frozenset({"rcv_fin", "snd_fin", "fin_after_peer", "closed"})
    assert implied("ESTABLISHED", "CLOSED", "passive", facts, frozenset(), True) == (
        "CLOSE_WAIT",
        "LAST_ACK",
    )


def test_a_fact_the_history_explains_puts_no_demand_on_the_path() -> None:
    # the FIN was sent back in FIN_WAIT1: FIN_WAIT2 → CLOSED needs nothing more
    facts = frozenset({"snd_fin"})
    assert implied("FIN_WAIT2", "CLOSED", "active", facts, frozenset({"FIN_WAIT1"}), True) == ()


def test_the_roles_choose_the_opening() -> None:
    assert candidate_paths("CLOSED", "ESTABLISHED", role="active") == [
        ["CLOSED", "SYN_SENT", "ESTABLISHED"]
    ]
    assert candidate_paths("CLOSED", "ESTABLISHED", role="passive") == [
        ["CLOSED", "SYN_RECV", "ESTABLISHED"]
    ]


def test_every_edge_joins_two_states_the_graph_knows() -> None:
    states = {src for src, _dst, _kind in EDGES} | {dst for _src, dst, _kind in EDGES}
    assert "CLOSE" not in states  # folded into CLOSED
    for src, dst, _kind in EDGES:
        assert candidate_paths(src, dst) == [[src, dst]]
