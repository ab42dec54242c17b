"""Which sockets an observer watches: its predicates and the kernel's filters."""

from __future__ import annotations

from daemons.matching import TRACE_BUFFER_KB, TraceConfig, local_filter, port_filter, trace_filters

CLIENT = ("192.0.2.1", 40312, "198.51.100.1", 7007)
SERVER = ("198.51.100.1", 7007, "192.0.2.1", 40312)
LISTENER = ("198.51.100.1", 7007, "0.0.0.0", 0)
OTHER = ("192.0.2.1", 40313, "203.0.113.9", 443)

# 198.51.100.1 as the kernel compares ``__u8 saddr[4]``: a little-endian u32
SERVER_U32 = "0x16433c6"


def test_no_ports_watch_everything() -> None:
    match = port_filter(())
    assert all(match(k) for k in (CLIENT, SERVER, LISTENER, OTHER))


def test_a_port_at_either_end() -> None:
    match = port_filter([7007])
    assert match(CLIENT) and match(SERVER) and match(LISTENER)
    assert not match(OTHER)


def test_a_listeners_sockets_are_its_own_side_only() -> None:
    match = local_filter("198.51.100.1", 7007)
    assert match(SERVER) and match(LISTENER)
    assert not match(CLIENT)  # the client's socket talks to 7007, it is not ours
    assert not match(("198.51.100.2", 7007, "192.0.2.1", 40312))


def test_a_wildcard_listener_takes_any_local_address() -> None:
    match = local_filter("0.0.0.0", 7007)
    assert match(("198.51.100.2", 7007, "192.0.2.1", 40312))
    assert not match(CLIENT)
    assert local_filter("::", 7007)(("2001:db8::1", 7007, "2001:db8::2", 50000))


def test_an_ipv4_address_is_filtered_at_either_end_in_the_kernel() -> None:
    filters = trace_filters("198.51.100.1")
    either = f"family == 10 || saddr == {SERVER_U32} || daddr == {SERVER_U32}"
    assert filters == {
        "sock/inet_sock_set_state": f"protocol == 6 && ({either})",
        "tcp/tcp_retransmit_skb": either,
        "tcp/tcp_retransmit_synack": either,
        "tcp/tcp_receive_reset": either,
    }


def test_without_a_comparable_address_only_tcp_is_kept() -> None:
    only_tcp = {"sock/inet_sock_set_state": "protocol == 6"}
    assert trace_filters(None) == only_tcp
    assert trace_filters("0.0.0.0") == only_tcp
    assert trace_filters("2001:db8::1") == only_tcp  # 16 bytes: left to ``match``


def test_a_listener_keeps_its_own_side_in_the_kernel() -> None:
    mine = f"sport == 7007 && (family == 10 || saddr == {SERVER_U32})"
    filters = trace_filters("198.51.100.1", 7007)
    assert filters["sock/inet_sock_set_state"] == f"protocol == 6 && {mine}"
    assert filters["tcp/tcp_retransmit_skb"] == mine
    assert filters["tcp/tcp_receive_reset"] == mine
    # tcp_send_reset is left to the observer's ``match``
    assert "tcp/tcp_send_reset" not in filters
    assert trace_filters("0.0.0.0", 7007)["tcp/tcp_retransmit_synack"] == "sport == 7007"
    assert trace_filters("2001:db8::1", 7007)["tcp/tcp_retransmit_synack"] == (
        "sport == 7007 && family == 10"
    )


def test_a_trace_config_has_the_default_buffer() -> None:
    config = TraceConfig("tcplab-x-cli")
    assert (config.filters, config.buffer_kb) == ({}, TRACE_BUFFER_KB)
