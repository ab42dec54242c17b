"""What each container runs for a scenario (compose roles), without Docker."""

from __future__ import annotations

from core import rules
from tcplab import roles, scenario


def load(name: str) -> scenario.Scenario:
    return scenario.load(scenario.find(name))


def test_the_tour_uses_one_server_policy() -> None:
    tour = roles.scenarios("tour")
    assert [sc.name for sc in tour] == list(roles.TOUR)
    assert len({sc.server.get("close") for sc in tour}) == 1  # one server serves them all


def test_daemon_options_come_from_the_scenario() -> None:
    sc = load("server-has-more-to-say")
    server = roles.server_argv(sc)
    assert server[server.index("--close") + 1] == "linger:200ms"
    assert server[server.index("--farewell") + 1] == "bye"
    client = roles.client_argv(sc, "198.51.100.10")
    assert client[client.index("--connect") + 1] == "198.51.100.10:7007"
    assert client[client.index("--close") + 1] == "shutdown"
    refused = roles.client_argv(load("connection-refused"), "198.51.100.10")
    assert refused[refused.index("--connect") + 1] == "198.51.100.10:7999"


def test_rule_tables_are_the_scenarios_rules_under_their_names() -> None:
    sc = load("simultaneous-close")
    tables = roles.rule_tables(sc)
    assert [t["name"] for t in tables] == ["simultaneous-close/1", "simultaneous-close/2"]
    parsed = [rules.parse_table(t, "control") for t in tables]
    assert [(r.match, r.action, r.delay) for r in parsed] == [
        (r.match, r.action, r.delay) for r in sc.rules
    ]
