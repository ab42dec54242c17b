"""A connect()'s traced SYN_SENT without a port, tied to its four-tuple."""

from __future__ import annotations

from daemons.portless import MAX_CONNECTING, PortlessConnects, is_portless
from daemons.tracking import TraceTransition

PORTLESS = ("192.0.2.1", 0, "198.51.100.1", 7007)
CLIENT = ("192.0.2.1", 40312, "198.51.100.1", 7007)
OTHER_PEER = ("192.0.2.1", 40312, "198.51.100.1", 7008)
SK = 0xFFFF888106438940


def tr(key: tuple[str, int, str, int], old: str, new: str, sk: int = SK) -> TraceTransition:
    return TraceTransition(key, sk, old, new, 1.0)


def test_only_a_connection_without_its_own_port_is_portless() -> None:
    assert is_portless(PORTLESS)
    assert not is_portless(CLIENT)
    assert not is_portless(("0.0.0.0", 0, "0.0.0.0", 0))  # nothing to wait for


def test_a_portless_syn_sent_waits_then_the_owner_names_it() -> None:
    c = PortlessConnects()
    syn = tr(PORTLESS, "CLOSED", "SYN_SENT")
    assert c.portless(syn) == []
    assert c.awaiting_port(CLIENT)
    assert not c.awaiting_port(OTHER_PEER)
    assert c.connecting(CLIENT) == [tr(CLIENT, "CLOSED", "SYN_SENT")]
    assert not c.awaiting_port(CLIENT)
    # its next portless event is known at once
    assert c.portless(tr(PORTLESS, "SYN_SENT", "ESTABLISHED")) == [
        tr(CLIENT, "SYN_SENT", "ESTABLISHED")
    ]


def test_the_owner_first_then_the_event() -> None:
    c = PortlessConnects()
    assert c.connecting(CLIENT) == []
    assert c.awaiting_port(CLIENT)
    assert c.portless(tr(PORTLESS, "CLOSED", "SYN_SENT")) == [tr(CLIENT, "CLOSED", "SYN_SENT")]
    assert not c.awaiting_port(CLIENT)


def test_the_sockets_next_event_with_its_port_brings_the_waiting_ones() -> None:
    c = PortlessConnects()
    c.portless(tr(PORTLESS, "CLOSED", "SYN_SENT"))
    assert c.ported(tr(CLIENT, "SYN_SENT", "ESTABLISHED")) == [tr(CLIENT, "CLOSED", "SYN_SENT")]
    assert c.ported(tr(CLIENT, "ESTABLISHED", "FIN_WAIT1")) == []
    assert not c.awaiting_port(CLIENT)


def test_connects_are_tied_in_the_order_they_were_made() -> None:
    c = PortlessConnects()
    c.portless(tr(PORTLESS, "CLOSED", "SYN_SENT", sk=1))
    c.portless(tr(PORTLESS, "CLOSED", "SYN_SENT", sk=2))
    second = ("192.0.2.1", 40313, "198.51.100.1", 7007)
    assert [e.skaddr for e in c.connecting(CLIENT)] == [1]
    assert [e.skaddr for e in c.connecting(second)] == [2]


def test_a_connect_that_fails_before_its_port_is_given_back_portless() -> None:
    c = PortlessConnects()
    syn = tr(PORTLESS, "CLOSED", "SYN_SENT")
    closed = tr(PORTLESS, "SYN_SENT", "CLOSED")
    c.portless(syn)
    assert c.portless(closed) == [syn, closed]
    assert not c.awaiting_port(CLIENT)


def test_a_connect_the_trace_reported_with_its_port_waits_no_more() -> None:
    c = PortlessConnects()
    c.connecting(CLIENT)
    c.seen(CLIENT)
    assert not c.awaiting_port(CLIENT)


def test_connects_waiting_for_their_event_are_bounded() -> None:
    c = PortlessConnects()
    keys = [("192.0.2.1", 1024 + n, "198.51.100.1", 7007) for n in range(MAX_CONNECTING + 1)]
    for key in keys:
        c.connecting(key)
    assert not c.awaiting_port(keys[0])  # the oldest is forgotten
    assert c.awaiting_port(keys[1]) and c.awaiting_port(keys[-1])
