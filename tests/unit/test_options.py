"""Options as data: every daemon's options dataclass survives the trip to
argv and back, field by field, and the daemons parse what the lab writes.

The strategies below give each field values a person could give on the
command line; a field without a strategy fails
:func:`test_every_field_has_a_strategy`, so a new option cannot skip the
round trip."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import proxy.__main__ as proxy_main
from core import logs, options, rules
from core.policies import CLIENT_POLICIES, ClosePolicy
from core.units import parse_duration
from daemons import client as client_daemon
from daemons import server as server_daemon
from daemons import watch as watch_daemon
from daemons.options import ClientOptions, ServerOptions, WatchOptions
from proxy.options import (
    EXPRESS_MODES,
    LOG_SEGMENT_MODES,
    RULE_ACTIONS,
    RX_RING_MODES,
    ProxyOptions,
)

one_line = st.text(st.characters(blacklist_characters="\n\r", blacklist_categories=["Cs"]))
durations = st.builds(
    lambda n, unit: parse_duration(f"{n}{unit}"),
    st.integers(0, 10**6),
    st.sampled_from(["us", "ms", "s"]),
).filter(lambda s: s <= 3600)
counts = st.integers(1, 1_000_000)
keepalive_times = st.integers(1, 32767).map(float)
endpoints = st.tuples(
    st.ip_addresses(v=4).map(str) | st.ip_addresses(v=6).map(str), st.integers(1, 65535)
)
names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20).filter(
    lambda name: not name.startswith("-")
)
ifnames = names.filter(lambda name: len(name) < 16)
server_policies = st.one_of(
    st.sampled_from(["immediate", "never", "abort", "first", "half"]),
    st.builds(lambda n: f"first:{n}", st.integers(0, 1000)),
    st.builds(lambda n: f"half:{n}", st.integers(0, 1000)),
    st.builds(lambda n: f"linger:{n}ms", st.integers(0, 10_000)),
).map(ClosePolicy.parse)


@st.composite
def rule_lists(draw: st.DrawFn) -> tuple[rules.Rule, ...]:
    out = []
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(RULE_ACTIONS))
        text = draw(st.sampled_from(["", "client:", "server:"]))
        text += draw(st.sampled_from([*rules.TAGS, "any"]))
        nth = draw(st.lists(st.integers(1, 99), max_size=3))
        if nth:
            text += "@" + ",".join(map(str, nth))
        if draw(st.booleans()):
            text += f"#{draw(st.integers(1, 99))}"
        if action == "delay":
            text += f"={draw(st.integers(0, 10_000))}ms"
        out.append(rules.parse_cli(action, text))
    return tuple(out)


COMMON: dict[str, Any] = {
    "netns": st.none() | names,
    "log_format": st.sampled_from(logs.FORMATS),
    "observe_interval": durations,
    "trace": st.none() | names,
    "observe_for": st.none() | durations,
}
STRATEGIES: dict[type, dict[str, Any]] = {
    ServerOptions: {
        **COMMON,
        "listen": endpoints,
        "close": server_policies,
        "max_conns": st.none() | counts,
        "idle_timeout": durations,
        "max_message": counts,
        "backlog": st.none() | counts,
        "observer": st.booleans(),
        "farewell": st.none() | one_line,
        "unread": st.none() | durations,
        "reuseaddr": st.booleans(),
        "no_accept": st.booleans(),
    },
    ClientOptions: {
        **COMMON,
        "connect": endpoints,
        "send": st.lists(one_line, min_size=1, max_size=4).map(tuple),
        "send_bytes": st.none() | counts,
        "count": counts,
        "concurrency": counts,
        "close": st.sampled_from(CLIENT_POLICIES),
        "connect_timeout": durations,
        "reply_timeout": durations,
        "max_message": counts,
        "keepalive_idle": st.none() | keepalive_times,
        "keepalive_interval": st.none() | keepalive_times,
        "keepalive_count": st.none() | st.integers(1, 127),
        "user_timeout": st.none() | st.integers(1, 86_400_000).map(lambda ms: ms / 1000),
    },
    WatchOptions: {
        "netns": names,
        "port": st.lists(st.integers(1, 65535), max_size=3).map(tuple),
        "interval": durations,
        "duration": st.none() | durations,
        "log_format": st.sampled_from(logs.FORMATS),
        "no_trace": st.booleans(),
    },
    ProxyOptions: {
        "netns": st.none() | names,
        "front": ifnames,
        "back": ifnames,
        "rules": rule_lists(),
        "pace": st.none() | durations,
        "rules_file": st.none() | names,
        "pcap": st.none() | names,
        "control": st.none() | names,
        "log_segments": st.sampled_from(LOG_SEGMENT_MODES),
        "express": st.sampled_from(EXPRESS_MODES),
        "rx_ring": st.sampled_from(RX_RING_MODES),
        "log_format": st.sampled_from(logs.FORMATS),
    },
}
PARSERS: dict[type, Any] = {
    ServerOptions: server_daemon.parse_args,
    ClientOptions: client_daemon.parse_args,
    WatchOptions: watch_daemon.parse_args,
    ProxyOptions: proxy_main.parse_args,
}


def every(cls: type) -> st.SearchStrategy[Any]:
    return st.builds(cls, **STRATEGIES[cls])


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
def test_every_field_has_a_strategy(cls: type) -> None:
    assert set(STRATEGIES[cls]) == {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("cls", list(STRATEGIES), ids=lambda c: c.__name__)
@given(data=st.data())
def test_options_survive_argv_and_the_daemons_parser(cls: type, data: st.DataObject) -> None:
    opts = data.draw(every(cls))
    argv = options.to_argv(opts)
    assert PARSERS[cls](argv) == opts


def test_only_what_differs_from_the_defaults_is_written() -> None:
    assert options.to_argv(ServerOptions()) == []
    assert options.to_argv(ServerOptions(observer=False)) == ["--no-observer"]
    assert options.to_argv(ClientOptions(send=("-x", "y"))) == ["--send=-x", "--send=y"]


def test_rules_keep_their_order_across_actions() -> None:
    argv = ["--delay", "fin@2=1s", "--drop", "fin@1", "--hold", "server:fin"]
    opts = proxy_main.parse_args(argv)
    assert [r.action for r in opts.rules] == ["delay", "drop", "hold"]
    assert options.to_argv(opts) == ["--delay=fin@2=1s", "--drop=fin@1", "--hold=server:fin"]


@pytest.mark.parametrize(
    ("cls", "argv", "message"),
    [
        (ClientOptions, ["--send", "a\nb"], "a message is one line"),
        (ClientOptions, ["--count", "0"], "--count: not a whole number from 1"),
        (ServerOptions, ["--close", "first:x"], "--close: first:x: expected a number"),
        (ServerOptions, ["--idle-timeout", "5"], "add a unit"),
        (WatchOptions, [], "--netns: which namespace to watch"),
        (WatchOptions, ["--netns", "../x"], "bad network namespace name"),
        (ServerOptions, ["--netns", "a/b"], "bad network namespace name"),
        (ProxyOptions, ["--drop", "synack@1"], "did you mean 'syn-ack'"),
        (ProxyOptions, ["--pace", "2h"], "longer than 3600s"),
        (ServerOptions, ["--unread", "2"], "add a unit"),
        (ClientOptions, ["--keepalive-idle", "1500ms"], "--keepalive-idle: 1500ms: whole seconds"),
        (ClientOptions, ["--keepalive-interval", "0s"], "whole seconds from 1s to 32767s"),
        (ClientOptions, ["--keepalive-count", "128"], "--keepalive-count: not a number of probes"),
        (ClientOptions, ["--user-timeout", "0ms"], "--user-timeout: 0s: whole milliseconds"),
        (ClientOptions, ["--user-timeout", "1500us"], "whole milliseconds"),
        (ClientOptions, ["--send-bytes", "0"], "--send-bytes: not a whole number from 1"),
        (ClientOptions, ["--send-bytes", "64k"], "--send-bytes: not a whole number from 1"),
        (ClientOptions, ["--send-bytes", "1000001"], "--send-bytes: not a whole number from 1"),
    ],
)
def test_a_bad_option_is_named(
    cls: type, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as stop:
        PARSERS[cls](argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_a_value_no_daemon_accepts_is_refused_where_it_is_built() -> None:
    with pytest.raises(ValueError, match="one line"):
        ClientOptions(send=("a\nb",))
    with pytest.raises(ValueError, match="at least one message"):
        ClientOptions(send=())
    with pytest.raises(ValueError, match=r"--keepalive-idle: .*whole seconds"):
        ClientOptions(keepalive_idle=1.5)
    with pytest.raises(ValueError, match="--keepalive-count: not from 1 to 127"):
        ClientOptions(keepalive_count=0)
    with pytest.raises(ValueError, match=r"--user-timeout: .*whole milliseconds"):
        ClientOptions(user_timeout=0.0005)


def test_any_keepalive_option_turns_keepalive_on() -> None:
    assert not ClientOptions().keepalive
    assert ClientOptions(keepalive_count=3).keepalive
    assert ClientOptions(keepalive_idle=1.0).keepalive


def test_a_server_that_never_accepts_is_a_switch() -> None:
    assert server_daemon.parse_args([]).no_accept is False
    opts = server_daemon.parse_args(["--no-accept", "--backlog", "4"])
    assert (opts.no_accept, opts.backlog) == (True, 4)
    assert options.to_argv(ServerOptions(no_accept=True)) == ["--no-accept"]


def test_a_bulk_send_is_a_count_of_bytes() -> None:
    assert client_daemon.parse_args([]).send_bytes is None
    assert client_daemon.parse_args(["--send-bytes", "200000"]).send_bytes == 200_000
    assert options.to_argv(ClientOptions(send_bytes=5)) == ["--send-bytes=5"]
    with pytest.raises(ValueError, match="--send-bytes: not from 1"):
        ClientOptions(send_bytes=0)
