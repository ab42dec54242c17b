"""Tracepoint events read as transitions and records, and when to look for a minisock."""

from __future__ import annotations

import pytest

from core.events import TcpReset, TcpRetransmit
from core.tracebuf import TraceEvent
from daemons.traceevents import event_key, event_record, may_hand_over, needs_lookup, transition_of
from daemons.tracking import TraceTransition

CLIENT = ("192.0.2.1", 40312, "198.51.100.1", 7007)
SK = 0xFFFF888106438940
# kernel state numbers, include/net/tcp_states.h
ESTABLISHED, SYN_SENT, FIN_WAIT2, CLOSE = 1, 2, 5, 7


def event(kind: str = "set_state", sport: int = 40312, **fields: object) -> TraceEvent:
    return TraceEvent(
        kind,  # type: ignore[arg-type]
        ts_ns=1_000,
        cpu=0,
        skaddr=SK,
        family=2,
        sport=sport,
        dport=7007,
        saddr="192.0.2.1",
        daddr="198.51.100.1",
        **fields,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("old", "may"),
    [
        ("FIN_WAIT2", True),
        ("CLOSING", True),
        ("FIN_WAIT1", True),
        ("LAST_ACK", False),
        ("ESTABLISHED", False),
        ("CLOSE_WAIT", False),
        ("SYN_RECV", False),
        ("SYN_SENT", False),
        ("LISTEN", False),
    ],
)
def test_only_a_closing_active_side_may_hand_over_to_a_minisock(old: str, may: bool) -> None:
    assert may_hand_over(old) is may


def test_a_state_change_becomes_a_transition_at_wall_time() -> None:
    got = transition_of(event(oldstate=FIN_WAIT2, newstate=CLOSE), 12.5)
    assert got == TraceTransition(CLIENT, SK, "FIN_WAIT2", "CLOSED", 12.5)
    assert event_key(event()) == CLIENT


def test_a_state_change_without_its_states_says_nothing() -> None:
    assert transition_of(event(oldstate=ESTABLISHED), 1.0) is None
    assert transition_of(event(newstate=ESTABLISHED), 1.0) is None


@pytest.mark.parametrize(
    ("key", "old", "new", "look"),
    [
        (CLIENT, "FIN_WAIT2", "CLOSED", True),
        (CLIENT, "CLOSING", "CLOSED", True),
        (CLIENT, "ESTABLISHED", "CLOSED", False),  # the connection's end: nothing follows
        (CLIENT, "FIN_WAIT1", "FIN_WAIT2", False),  # not a close
        (("192.0.2.1", 0, "198.51.100.1", 7007), "FIN_WAIT2", "CLOSED", False),  # no port
        (("198.51.100.1", 7007, "0.0.0.0", 0), "FIN_WAIT2", "CLOSED", False),  # no peer
    ],
)
def test_a_lookup_only_where_a_minisock_may_take_over(
    key: tuple[str, int, str, int], old: str, new: str, look: bool
) -> None:
    assert needs_lookup(TraceTransition(key, SK, old, new, 1.0)) is look


def test_a_retransmission_is_a_record_of_its_own() -> None:
    record = event_record(event("retransmit", state=ESTABLISHED), 2.0, "c")
    assert record == TcpRetransmit(
        ts=2.0, conn="c", local="192.0.2.1:40312", state="ESTABLISHED", synack=False
    )


def test_a_synack_retransmission_is_in_syn_recv() -> None:
    record = event_record(event("retransmit_synack"), 2.0, "c")
    assert isinstance(record, TcpRetransmit)
    assert (record.state, record.synack) == ("SYN_RECV", True)


def test_resets_say_their_direction_state_and_reason() -> None:
    sent = event_record(event("send_reset", state=ESTABLISHED, reason="NOT_SPECIFIED"), 3.0, "c")
    assert sent == TcpReset(
        ts=3.0,
        conn="c",
        local="192.0.2.1:40312",
        direction="sent",
        state="ESTABLISHED",
        reason="NOT_SPECIFIED",
    )
    received = event_record(event("receive_reset"), 3.0, "c")
    assert isinstance(received, TcpReset)
    assert (received.direction, received.state) == ("received", None)


def test_a_state_change_is_no_record_of_its_own() -> None:
    assert event_record(event(oldstate=SYN_SENT, newstate=ESTABLISHED), 1.0, "c") is None
