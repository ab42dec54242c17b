"""The kernel's TCP counters as nstat names them, what a run moved, and the
expectation on them."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import netstat
from core.events import ObserverStop
from tcplab import scenario
from tcplab.scenario.check import _check_counters

NETSTAT = """\
TcpExt: SyncookiesSent SyncookiesRecv ListenOverflows ListenDrops TCPTimeWaitOverflow
TcpExt: 0 0 3 4 0
IpExt: InNoRoutes InOctets
IpExt: 0 1234
"""
SNMP = """\
Tcp: RtoAlgorithm ActiveOpens CurrEstab OutRsts
Tcp: 1 10 2 5
Udp: InDatagrams
Udp: 7
"""


def test_counters_are_named_as_nstat_names_them_and_only_tcps_are_kept() -> None:
    counters = netstat.parse(NETSTAT) | netstat.parse(SNMP)
    assert counters["TcpExtListenOverflows"] == 3
    assert counters["TcpOutRsts"] == 5
    assert not any(name.startswith(("IpExt", "Udp")) for name in counters)


def test_a_header_without_its_values_is_skipped_not_misread() -> None:
    assert netstat.parse("TcpExt: A B\nTcpExt: 1\n") == {}
    assert netstat.parse("TcpExt: A B\n") == {}


def test_a_run_keeps_what_moved_and_shows_what_an_ops_class_reads() -> None:
    before = {"TcpExtListenOverflows": 3, "TcpCurrEstab": 2, "TcpActiveOpens": 10}
    after = {"TcpExtListenOverflows": 5, "TcpCurrEstab": 0, "TcpActiveOpens": 10, "TcpOutRsts": 1}
    changes = netstat.moved(before, after)
    assert changes == {"TcpExtListenOverflows": 2, "TcpCurrEstab": -2, "TcpOutRsts": 1}
    assert netstat.shown(changes) == [("TcpExtListenOverflows", 2), ("TcpOutRsts", 1)]


def test_this_kernel_has_every_counter_a_ladder_shows() -> None:
    counters = netstat.read()
    if not counters:
        pytest.skip("no /proc/thread-self/net here")
    assert [name for name in netstat.SHOWN if name not in counters] == []


def stop(counters: dict[str, int] | None) -> ObserverStop:
    return ObserverStop(ts=1.0, component="server", reason="deadline", counters=counters)


def test_the_expectation_holds_only_when_the_counter_rose_enough() -> None:
    want = {"TcpExtListenOverflows": 2}
    assert _check_counters("server", want, stop({"TcpExtListenOverflows": 2})) == []
    (failure,) = _check_counters("server", want, stop({"TcpExtListenOverflows": 1}))
    assert "TcpExtListenOverflows" in failure and "+1" in failure
    (failure,) = _check_counters("server", want, stop(None))
    assert "none" in failure


def test_a_counter_that_is_no_nstat_name_is_refused_with_its_place(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "bad"\ntitle = "t"\nteaches = "x"\nteaches_zh = "x"\n\n'
        "[expect.server]\ncounters = { ListenOverflows = 1 }\n"
    )
    with pytest.raises(scenario.ScenarioError) as err:
        scenario.load(path)
    assert "bad.toml:7" in str(err.value) and "ListenOverflows" in str(err.value)
