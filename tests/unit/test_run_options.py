"""``tcplab run SCENARIO --OPTION``: each documented option, given with a
scenario that sets the same thing, wins (or adds, for faults) — and the
daemons' own parsers accept the arguments the runner builds from it.

No lab is built: the options are checked up to the argv each daemon gets.
"""

from __future__ import annotations

from typing import Any

import pytest

import proxy.__main__ as proxy_main
from core import rules
from daemons import client as client_daemon
from daemons import server as server_daemon
from proxy.options import ProxyOptions
from tcplab import cli, runner, scenario, topology

LAB = topology.Lab("abc123", topology.Forwarding.PROXY, topology.Addressing(slot=7))


def scenario_run(*argv: str, name: str = "handshake-and-teardown") -> tuple[Any, Any, Any]:
    args = cli.build_parser().parse_args(["run", name, *argv])
    sc = scenario.load(scenario.find(name))
    return cli.scenario_run(args, sc)


def daemons(opts: runner.RunOptions) -> tuple[Any, Any, ProxyOptions]:
    """What each daemon makes of the argv the runner gives it (and it is
    what the runner meant)."""
    server_opts = runner.lab_server_options(LAB, opts)
    client_opts = runner.lab_client_options(LAB, opts)
    proxy_opts = runner.proxy_options(LAB, opts)
    server = server_daemon.parse_args(runner.daemon_argv("daemons.server", server_opts)[3:])
    client = client_daemon.parse_args(runner.daemon_argv("daemons.client", client_opts)[3:])
    proxy = proxy_main.parse_args(runner.daemon_argv("proxy", proxy_opts)[3:])
    assert (server, client, proxy) == (server_opts, client_opts, proxy_opts)
    return server, client, proxy


def test_pace_given_replaces_the_scenarios() -> None:
    # the scenario paces at 100 ms; the README shows `run FILE --pace 200ms`
    _sc, opts, _spec = scenario_run("--pace", "250ms")
    _server, _client, proxy = daemons(opts)
    assert proxy.pace == 0.25


def test_pace_of_minutes_is_not_turned_into_an_exponent() -> None:
    _sc, opts, _spec = scenario_run("--pace", "20m")
    _server, _client, proxy = daemons(opts)
    assert proxy.pace == 1200.0  # not "1.2e+06ms"


@pytest.mark.parametrize("action", ["drop", "delay", "hold", "duplicate", "reset"])
def test_faults_given_are_added_to_the_scenarios(action: str) -> None:
    rule = "server:fin@1=2s" if action == "delay" else "server:fin@1"
    _sc, opts, _spec = scenario_run(f"--{action}", rule, name="lost-syn")
    _server, _client, proxy = daemons(opts)
    # the scenario's drop client:syn@1 first, then this one
    given = [(r.action, rules.format_rule(r)) for r in proxy.rules]
    assert given == [("drop", "client:syn@1"), (action, rule)]


def test_log_segments_given_replaces_the_scenarios() -> None:
    _sc, opts, _spec = scenario_run("--log-segments", "control")
    assert daemons(opts)[2].log_segments == "control"
    _sc, opts, _spec = scenario_run("--log-segments", "all", name="handshake-and-teardown")
    assert daemons(opts)[2].log_segments == "all"


def test_sysctls_given_override_the_scenarios_key_by_key() -> None:
    sc = scenario.load(scenario.find("syn-timeout"))
    assert sc.sysctls["cli"]["net.ipv4.tcp_syn_retries"] == "2"
    _sc, opts, spec = scenario_run(
        "--sysctl", "cli:net.ipv4.tcp_syn_retries=3", "--sysctl", "srv:net.ipv4.tcp_fin_timeout=5",
        name="syn-timeout",
    )  # fmt: skip
    assert spec.sysctls["cli"]["net.ipv4.tcp_syn_retries"] == "3"
    assert spec.sysctls["srv"]["net.ipv4.tcp_fin_timeout"] == "5"
    assert opts.sysctls == spec.sysctls


def test_close_policies_given_replace_the_scenarios() -> None:
    # the scenario's server lingers 300 ms; its client closes actively
    _sc, opts, _spec = scenario_run("--server-close", "first:0", "--client-close", "passive")
    server, client, _proxy = daemons(opts)
    assert (server.close.kind, server.close.after_messages) == ("first", 0)
    assert client.close == "passive"


@pytest.mark.parametrize(
    ("option", "value", "check"),
    [
        ("--count", "3", lambda s, c: c.count == 3 and s.max_conns == 3),
        ("--concurrency", "2", lambda s, c: c.concurrency == 2),
        ("--port", "8080", lambda s, c: s.listen[1] == 8080 and c.connect[1] == 8080),
        ("--farewell", "bye", lambda s, c: s.farewell == "bye"),
        ("--send", "one", lambda s, c: c.send == ("one",)),
        (
            "--observe-for",
            "5s",
            lambda s, c: (
                s.observe_for == 5.0 + runner.SERVER_OBSERVE_MARGIN_S and c.observe_for == 5.0
            ),
        ),
    ],
)
def test_conversation_options_given_replace_the_scenarios(
    option: str, value: str, check: Any
) -> None:
    _sc, opts, _spec = scenario_run(option, value, name="server-has-more-to-say")
    server, client, _proxy = daemons(opts)
    assert check(server, client)


@pytest.mark.parametrize(
    ("name", "check"),
    [
        ("close-with-unread-data", lambda o, s, c: s.unread == 0.3 and s.reuseaddr),
        ("server-restart-eaddrinuse", lambda o, s, c: o.restart and not s.reuseaddr),
        ("server-restart-reuseaddr", lambda o, s, c: o.restart and s.reuseaddr),
        (
            "keepalive-dead-peer",
            lambda o, s, c: (
                c.keepalive
                and (c.keepalive_idle, c.keepalive_interval, c.keepalive_count) == (1.0, 1.0, 3)
            ),
        ),
        ("user-timeout", lambda o, s, c: c.user_timeout == 2.0 and not c.keepalive),
        ("handshake-and-teardown", lambda o, s, c: not o.restart and s.unread is None),
        (
            "fin-wait1-zero-window",
            lambda o, s, c: s.unread == 8.0 and c.send_bytes == 200_000 and c.close == "active",
        ),
    ],
)
def test_a_scenarios_socket_options_reach_the_daemons(name: str, check: Any) -> None:
    _sc, opts, _spec = scenario_run(name=name)
    server, client, _proxy = daemons(opts)
    assert check(opts, server, client)


def test_ipv6_given_moves_the_run_to_ipv6() -> None:
    _sc, opts, _spec = scenario_run("--ipv6")
    server, client, _proxy = daemons(opts)
    assert server.listen[0] == LAB.addr.server6 == client.connect[0]


def test_no_trace_given_makes_the_observers_poll() -> None:
    _sc, opts, _spec = scenario_run("--no-trace")
    server, client, _proxy = daemons(opts)
    assert server.trace is None and client.trace is None
    _sc, opts, _spec = scenario_run()
    server, client, _proxy = daemons(opts)
    assert server.trace == "tcplab-abc123-srv" and client.trace == "tcplab-abc123-cli"


def test_pcap_given_reaches_the_proxy(tmp_path: Any) -> None:
    _sc, opts, _spec = scenario_run("--pcap", str(tmp_path / "x.pcapng"))
    assert str(daemons(opts)[2].pcap) == str(tmp_path / "x.pcapng")


def test_wait_observes_past_time_wait_and_drops_what_is_left_expectations() -> None:
    sc, opts, _spec = scenario_run("--wait", name="time-wait")
    assert opts.observe_for > 60 and opts.deadline > 60
    assert sc.expect_client.final is None and sc.expect_server.final is None
    assert daemons(opts)[0].observe_for > 60


def test_kernel_forwarding_with_a_scenario_that_needs_the_proxy_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stop:
        scenario_run("--forwarding", "kernel", name="lost-syn")
    assert stop.value.code == cli.EXIT_USAGE
    assert "needs the proxy" in capsys.readouterr().err
    # a scenario without faults or pace may run on kernel forwarding
    _sc, opts, spec = scenario_run("--forwarding", "kernel", name="connection-refused")
    assert opts.forwarding is topology.Forwarding.KERNEL is spec.forwarding


def test_a_bad_fault_given_is_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as stop:
        scenario_run("--drop", "synack@1")
    assert stop.value.code == cli.EXIT_USAGE
    assert "did you mean 'syn-ack'" in capsys.readouterr().err


def test_every_run_option_is_covered_here() -> None:
    """A new ``run`` option needs a test above."""
    parser = cli.build_parser()
    run = next(
        a for a in parser._subparsers._group_actions[0].choices.values()  # type: ignore[union-attr]
        if a.prog.endswith(" run")
    )  # fmt: skip
    options = {o for action in run._actions for o in action.option_strings if o.startswith("--")}
    covered = {
        "--pace", "--drop", "--delay", "--hold", "--duplicate", "--reset", "--log-segments",
        "--sysctl", "--server-close", "--client-close", "--count", "--concurrency", "--port",
        "--farewell", "--send", "--observe-for", "--ipv6", "--no-trace", "--pcap", "--wait",
        "--forwarding", "--help",
        # what a run prints, not what it runs: tested by the CLI's integration tests
        "--json", "--html", "--lang",
        # where it is shown: tests/unit/test_board.py, tests/integration/test_board_browser.py
        "--board", "--listen", "--allow-remote",
    }  # fmt: skip
    assert options == covered


def test_a_server_that_never_accepts_reaches_the_daemon() -> None:
    server, _client, _proxy = daemons(runner.RunOptions(no_accept=True))
    assert server.no_accept
    server, _client, _proxy = daemons(runner.RunOptions())
    assert not server.no_accept
