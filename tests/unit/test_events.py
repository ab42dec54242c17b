"""The event vocabulary: records round-trip through JSON log lines."""

from __future__ import annotations

import dataclasses
import io
import json
import time

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st

from core import events, logs

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


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        ("", "not ADDR:PORT"),
        ("1.2.3.4", "not ADDR:PORT"),
        ("1.2.3.4:x", "not ADDR:PORT"),
        ("1.2.3.4:" + "9" * 5000, "not ADDR:PORT"),
        ("nothost:80", "does not appear to be an IPv4 or IPv6 address"),
        ("1.2.3.4:70000", "port out of range"),
    ],
)
def test_parse_endpoint_rejects(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        events.parse_endpoint(bad)


times = st.floats(1e9, 2e9, allow_nan=False)
tcp_states = st.builds(
    events.TcpState,
    ts=times,
    conn=conns,
    old=states,
    new=states,
    source=st.sampled_from(events.SOURCES),
    seen_after=st.none() | times,
    in_old_ms=st.none() | st.floats(0, 1e7, allow_nan=False),
    timer=st.sampled_from(sorted(events.TIMERS.values())),
    expires_ms=st.none() | st.integers(0, 10**7),
    retrans=st.integers(0, 20),
    sock=st.none() | st.sampled_from(events.SOCK_KINDS),
    handed_to=st.none() | st.just("timewait"),
    handed_state=st.none() | st.sampled_from(["TIME_WAIT", "FIN_WAIT2"]),
)
segments = st.builds(
    events.Segment,
    ts=times,
    conn=conns,
    dir=st.sampled_from(["c2s", "s2c"]),
    flags=st.sampled_from(["S", "SA", "A", "FA", "PA", "R", "RA", "FPA"]),
    seq=st.integers(0, 2**32 - 1),
    ack=st.integers(0, 2**32 - 1),
    rseq=st.integers(0, 2**32 - 1),
    rack=st.integers(0, 2**32 - 1),
    len=st.integers(0, 65535),
    tags=st.lists(st.sampled_from(["syn", "fin", "ack", "data"]), max_size=3).map(tuple),
    verdict=st.sampled_from(events.VERDICTS),
    rule=st.none() | st.just("r1"),
    delay_ms=st.none() | st.floats(0, 1e5, allow_nan=False),
    kept_ms=st.none() | st.floats(0, 1e5, allow_nan=False),
    sent_ts=st.none() | times,
)
apps = st.builds(
    events.App,
    ts=times,
    kind=st.sampled_from(sorted(events.APP_EVENTS)),
    conn=st.none() | conns,
    bytes=st.none() | st.integers(0, 10**6),
    how=st.none() | st.sampled_from(["close", "abort", "ECONNRESET"]),
    returned_ts=st.none() | times,
)
stops = st.builds(
    events.ObserverStop,
    ts=times,
    reason=st.sampled_from(["deadline", "sockets_gone"]),
    remaining=st.lists(
        st.fixed_dictionaries(
            {"conn": conns, "state": states, "expires_ms": st.integers(0, 60000)}
        ),
        max_size=3,
    ).map(tuple),
)
resets = st.builds(
    events.TcpReset,
    ts=times,
    conn=conns,
    local=st.just("192.0.2.1:1"),
    direction=st.sampled_from(["sent", "received"]),
    reason=st.none() | st.just("NO_SOCKET"),
)


@given(tcp_states | segments | apps | stops | resets)
def test_records_round_trip_through_a_json_log_line(record: events.Record) -> None:
    out = io.StringIO()
    logs.configure("client", "json", stream=out)
    events.emit(structlog.get_logger(), record)
    line = out.getvalue().strip()
    parsed = events.parse_record(line)
    assert parsed is not None
    assert parsed.component == "client"
    assert parsed.logged_ts is not None
    assert dataclasses.replace(parsed, component="", logged_ts=None) == record


def test_every_event_kind_has_one_record_type() -> None:
    names = [cls.EVENT for cls in events.RECORD_TYPES]
    assert len(names) == len(set(names))
    assert frozenset(names) | events.APP_EVENTS == events.KNOWN_EVENTS


def test_tcp_state_rejects_unknown_state() -> None:
    with pytest.raises(ValueError, match="SYN_SEND"):
        events.TcpState(ts=1.0, conn="x", old="CLOSED", new="SYN_SEND")


def test_a_line_that_does_not_fit_its_kind_names_the_field() -> None:
    with pytest.raises(events.RecordError, match=r"tcp_state\.new: unknown TCP state 'NOPE'"):
        events.from_fields({"ts": 1.0, "event": "tcp_state", "conn": "a", "old": "CLOSED",
                            "new": "NOPE"})  # fmt: skip
    with pytest.raises(events.RecordError, match=r"segment: .*missing"):
        events.from_fields({"ts": 1.0, "event": "segment", "conn": "a"})
    assert events.parse_record('{"ts": 1.0, "event": "segment", "conn": "a"}') is None


@pytest.mark.parametrize(
    "line",
    ["", "garbage", "[1,2]", '{"event": "x"}', '{"ts": "a", "event": "x"}', "[" * 60000],
)
def test_parse_line_ignores_non_events(line: str) -> None:
    assert events.parse_line(line) is None


def test_ts_is_the_records_own_and_the_logger_adds_only_logged_ts() -> None:
    out = io.StringIO()
    logs.configure("server", "json", stream=out)
    fact = 1_000_000_000.25  # long ago: the fact's time, not the writing's
    before = time.time()
    events.emit(structlog.get_logger(), events.App(ts=fact, kind=events.APP_ACCEPT, conn="a:1-b:2"))
    after = time.time()
    obj = json.loads(out.getvalue())
    assert list(obj)[:3] == ["ts", "component", "event"]
    assert obj["ts"] == fact
    assert before - 1e-6 <= obj["logged_ts"] <= after + 1e-6


def test_a_call_without_ts_does_not_make_an_event_line() -> None:
    # the processor never supplies ts: a forgotten one shows as a stray line
    out = io.StringIO()
    logs.configure("server", "json", stream=out)
    structlog.get_logger().info("app_accept", conn="a:1-b:2")
    assert events.parse_line(out.getvalue()) is None


def test_stdlib_logging_goes_through_the_same_chain() -> None:
    import logging

    out = io.StringIO()
    logs.configure("proxy", "json", stream=out)
    before = time.time()
    logging.getLogger("trio.something").warning("careful %s", "now")
    record = events.parse_record(out.getvalue())
    assert isinstance(record, events.LogMessage)
    assert record.message == "careful now"
    assert record.component == "proxy"
    assert record.logger == "trio.something"
    assert record.log_level == "warning"
    assert before <= record.ts <= time.time()


def test_exceptions_are_structured_in_json() -> None:
    out = io.StringIO()
    logs.configure("proxy", "json", stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger().exception("log_message", ts=1.0, message="failed")
    obj = json.loads(out.getvalue())
    assert obj["exception"][0]["exc_type"] == "ValueError"
    assert obj["exception"][0]["exc_value"] == "boom"


def test_auto_is_console_on_a_tty_and_json_otherwise() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.resolve_format("auto", Tty()) == "console"
    assert logs.resolve_format("auto", io.StringIO()) == "json"


def test_lines_are_written_as_they_come_outside_a_batch() -> None:
    out = io.StringIO()
    logs.configure("server", "json", stream=out)
    log = logs.get_logger()
    events.emit(log, events.App(ts=1.0, kind=events.APP_ACCEPT, conn="a:1-b:2"))
    assert out.getvalue().count("\n") == 1


async def test_a_batch_writes_its_lines_together_in_order_and_all_of_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import logging

    import trio

    # however slow this machine is now, the lines wait for the loop
    monkeypatch.setattr(logs, "MAX_DELAY_S", 60.0)
    out = io.StringIO()
    logs.configure("server", "json", stream=out)
    log = logs.get_logger()
    with logs.batched():
        for n in range(5):
            events.emit(log, events.App(ts=float(n), kind=events.APP_SEND, conn="a:1-b:2", bytes=n))
        logging.getLogger("trio").warning("from the stdlib")
        events.emit(log, events.App(ts=9.0, kind=events.APP_CLOSE, conn="a:1-b:2"))
        assert out.getvalue() == ""  # gathered while the loop is busy
        await trio.sleep(0.01)  # the loop went idle: written
        written = out.getvalue()
        assert written.count("\n") == 7
        events.emit(log, events.App(ts=10.0, kind=events.APP_CLOSE, conn="c:1-d:2"))
    # leaving the block writes what was left
    records = [events.parse_record(line) for line in out.getvalue().splitlines()]
    assert [type(r).__name__ for r in records] == ["App"] * 5 + ["LogMessage", "App", "App"]
    assert [r.ts for r in records if isinstance(r, events.App)] == [0, 1, 2, 3, 4, 9, 10]


async def test_a_batch_is_written_however_its_block_ends() -> None:
    out = io.StringIO()
    logs.configure("server", "json", stream=out)
    log = logs.get_logger()
    with pytest.raises(KeyboardInterrupt), logs.batched():
        events.emit(log, events.App(ts=1.0, kind=events.APP_ACCEPT, conn="a:1-b:2"))
        raise KeyboardInterrupt
    record = events.parse_record(out.getvalue())
    assert isinstance(record, events.App) and record.ts == 1.0


async def test_a_busy_loop_still_writes_every_few_milliseconds() -> None:
    out = io.StringIO()
    logs.configure("server", "json", stream=out)
    log = logs.get_logger()
    with logs.batched():
        events.emit(log, events.App(ts=1.0, kind=events.APP_ACCEPT, conn="a:1-b:2"))
        time.sleep(logs.MAX_DELAY_S * 2)  # noqa: ASYNC251 - the loop must not get a turn
        events.emit(log, events.App(ts=2.0, kind=events.APP_ACCEPT, conn="a:1-b:2"))
        assert out.getvalue().count("\n") == 2


def test_other_bound_context_is_merged_and_the_components_name_kept() -> None:
    out = io.StringIO()
    logs.configure("client", "json", stream=out)
    structlog.contextvars.bind_contextvars(run="r1")
    try:
        structlog.get_logger().info("app_accept", ts=1.0, conn="a:1-b:2")
    finally:
        structlog.contextvars.unbind_contextvars("run")
    obj = json.loads(out.getvalue())
    assert obj["component"] == "client"
    assert obj["run"] == "r1"


def test_levels_below_the_configured_one_are_dropped() -> None:
    import logging

    out = io.StringIO()
    logs.configure("client", "json", stream=out, level=logging.WARNING)
    log = logs.get_logger()
    log.info("app_accept", ts=1.0)
    log.warning("app_error", ts=2.0, how="ECONNRESET")
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["level"] == "warning"
