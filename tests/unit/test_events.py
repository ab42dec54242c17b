"""The event vocabulary: records round-trip through JSON log lines."""

from __future__ import annotations

import io
import json

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from tcplab import events, logs

states = st.sampled_from(sorted(events.STATE_NAMES))
ports = st.integers(0, 65535)
ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
addrs = ipv4 | ipv6
conns = st.builds(events.conn_id, addrs, ports, addrs, ports)


@given(addrs, ports, addrs, ports)
def test_conn_id_round_trips(a: str, p: int, b: str, q: int) -> None:
    assert events.parse_conn(events.conn_id(a, p, b, q)) == ((a, p), (b, q))


def test_conn_id_format_is_client_first() -> None:
    assert events.conn_id("192.0.2.1", 40312, "198.51.100.1", 7007) == (
        "192.0.2.1:40312-198.51.100.1:7007"
    )
    assert events.conn_id("2001:db8:1::1", 5, "2001:db8:2::1", 7) == (
        "[2001:db8:1::1]:5-[2001:db8:2::1]:7"
    )


@pytest.mark.parametrize("bad", ["", "1.2.3.4", "1.2.3.4:x", "nothost:80", "1.2.3.4:70000"])
def test_parse_endpoint_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match=r"ADDR:PORT|port|does not appear|not"):
        events.parse_endpoint(bad)


tcp_states = st.builds(
    events.TcpState,
    conn=conns,
    old=states,
    new=states,
    source=st.sampled_from(events.SOURCES),
    in_old_ms=st.none() | st.floats(0, 1e7, allow_nan=False),
    timer=st.sampled_from(sorted(events.TIMERS.values())),
    expires_ms=st.none() | st.integers(0, 10**7),
    retrans=st.integers(0, 20),
)
segments = st.builds(
    events.Segment,
    conn=conns,
    dir=st.sampled_from(["c2s", "s2c"]),
    flags=st.sampled_from(["S", "SA", "A", "FA", "PA", "R", "RA", "FPA"]),
    seq=st.integers(0, 2**32 - 1),
    ack=st.integers(0, 2**32 - 1),
    rseq=st.integers(0, 2**32 - 1),
    rack=st.integers(0, 2**32 - 1),
    len=st.integers(0, 65535),
    tags=st.lists(st.sampled_from(["syn", "fin", "ack", "data"]), max_size=3).map(tuple),
    verdict=st.sampled_from(["pass", "drop", "delay", "hold"]),
    rule=st.none() | st.just("r1"),
    delay_ms=st.none() | st.floats(0, 1e5, allow_nan=False),
)
apps = st.builds(
    events.App,
    event=st.sampled_from(sorted(events.APP_EVENTS)),
    conn=st.none() | conns,
    bytes=st.none() | st.integers(0, 10**6),
    how=st.none() | st.sampled_from(["close", "abort", "ECONNRESET"]),
)


@given(tcp_states | segments | apps)
def test_records_round_trip_through_a_json_log_line(record: events.Record) -> None:
    out = io.StringIO()
    logs.configure("client", "json", stream=out)
    structlog.get_logger().info(
        record.event, **{k: v for k, v in events.to_fields(record).items() if k != "event"}
    )
    line = out.getvalue().strip()
    parsed = events.parse_line(line)
    assert parsed is not None
    assert parsed["component"] == "client"
    assert events.from_fields(parsed) == record


def test_tcp_state_rejects_unknown_state() -> None:
    with pytest.raises(ValueError, match="SYN_SEND"):
        events.TcpState(conn="x", old="CLOSED", new="SYN_SEND")


@pytest.mark.parametrize(
    "line", ["", "garbage", "[1,2]", '{"event": "x"}', '{"ts": "a", "event": "x"}']
)
def test_parse_line_ignores_non_events(line: str) -> None:
    assert events.parse_line(line) is None


def test_json_lines_carry_ts_component_event_first() -> None:
    out = io.StringIO()
    logs.configure("server", "json", stream=out)
    structlog.get_logger().info(events.APP_ACCEPT, conn="a:1-b:2")
    obj = json.loads(out.getvalue())
    assert list(obj)[:3] == ["ts", "component", "event"]
    assert isinstance(obj["ts"], float)


def test_stdlib_logging_goes_through_the_same_chain() -> None:
    import logging

    out = io.StringIO()
    logs.configure("proxy", "json", stream=out)
    logging.getLogger("trio.something").warning("careful %s", "now")
    obj = json.loads(out.getvalue())
    assert obj["event"] == "careful now"
    assert obj["component"] == "proxy"
    assert obj["logger"] == "trio.something"


def test_auto_is_console_on_a_tty_and_json_otherwise() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.resolve_format("auto", Tty()) == "console"
    assert logs.resolve_format("auto", io.StringIO()) == "json"
