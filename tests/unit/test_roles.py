"""What each container runs for a scenario (compose roles), without Docker."""

from __future__ import annotations

import pytest

from core import rules
from daemons import client as client_daemon
from daemons import server as server_daemon
from tcplab import roles, scenario


def load(name: str) -> scenario.Scenario:
    return scenario.load(scenario.find(name))


def test_the_tour_uses_one_server_policy() -> None:
    tour = roles.scenarios("tour")
    assert [sc.name for sc in tour] == list(roles.TOUR)
    assert len({sc.server.get("close") for sc in tour}) == 1  # one server serves them all


def test_daemon_options_come_from_the_scenario() -> None:
    sc = load("server-has-more-to-say")
    argv = roles.server_argv(sc)
    assert argv[1:3] == ["-m", "daemons.server"]
    server = server_daemon.parse_args(argv[3:])
    assert str(server.close) == "linger:200ms" and server.farewell == "bye"
    assert server.listen == ("0.0.0.0", 7007) and server.max_conns is None
    argv = roles.client_argv(sc, "198.51.100.10")
    assert argv[1:3] == ["-m", "daemons.client"]
    client = client_daemon.parse_args(argv[3:])
    assert client.connect == ("198.51.100.10", 7007) and client.close == "shutdown"
    refused_argv = roles.client_argv(load("connection-refused"), "198.51.100.10")
    refused = client_daemon.parse_args(refused_argv[3:])
    assert refused.connect == ("198.51.100.10", 7999)


def test_rule_tables_are_the_scenarios_rules_under_their_names() -> None:
    sc = load("simultaneous-close")
    tables = roles.rule_tables(sc)
    assert [t["name"] for t in tables] == ["simultaneous-close/1", "simultaneous-close/2"]
    parsed = [rules.parse_table(t, "control") for t in tables]
    assert [(r.match, r.action, r.delay) for r in parsed] == [
        (r.match, r.action, r.delay) for r in sc.rules
    ]


def test_the_proxy_logs_control_segments_unless_told_otherwise() -> None:
    assert roles.log_segments("") == "control"
    assert roles.log_segments("all") == "all"
    assert roles.log_segments(" none ") == "none"
    with pytest.raises(ValueError, match=r"LOG_SEGMENTS='every'.*all, control, none"):
        roles.log_segments("every")
