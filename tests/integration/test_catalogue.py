"""`tcplab verify`: every scenario of the catalogue, on real kernels, two
at a time in independent labs."""

from __future__ import annotations

import sys

import pytest
import trio

from tcplab import scenario
from tests.integration.conftest import lab_leftovers


@pytest.mark.parametrize("source", ["trace", "poll"])
async def test_the_whole_catalogue_holds(source: str) -> None:
    """Every expectation and every causal rule, with the tracepoints (where
    tracefs can be used) and with polling alone, as in containers."""
    before = lab_leftovers()
    extra = ["--no-trace"] if source == "poll" else []
    with trio.fail_after(600):
        proc = await trio.run_process(
            [sys.executable, "-m", "tcplab.cli", "verify", "--jobs", "2", *extra],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    report = proc.stdout.decode()
    total = len(scenario.catalogue())
    assert proc.returncode == 0, report + proc.stderr.decode()
    assert f"{total}/{total} scenarios held every expectation" in report
    assert lab_leftovers() == before


async def test_a_failed_expectation_fails_verify(tmp_path: object) -> None:
    """A scenario whose expectation is wrong on purpose: verify says which and
    why, and exits 1."""
    from pathlib import Path

    wrong = Path(str(tmp_path)) / "wrong.toml"
    text = (scenario.CATALOGUE / "lost-syn.toml").read_text()
    wrong.write_text(
        text.replace('min_in = { SYN_SENT = "900ms" }', 'min_in = { SYN_SENT = "5s" }')
    )
    with trio.fail_after(120):
        proc = await trio.run_process(
            [sys.executable, "-m", "tcplab.cli", "verify", str(wrong)],
            capture_stdout=True,
            check=False,
        )
    report = proc.stdout.decode()
    assert proc.returncode == 1
    assert "expected at least 5000 ms in SYN_SENT, saw" in report
    assert "0/1 scenarios held every expectation" in report


WITHOUT_WHAT_THEY_SHOW: list[tuple[str, str | tuple[str, str], list[str]]] = [
    # (scenario, the text taken out of it (or (text, what replaces it)), what verify
    # must then say)
    (
        "no-time-wait",
        'cli = { "net.ipv4.tcp_max_tw_buckets" = "0" }\n',
        [
            "client: expected no sockets left at the end, saw TIME_WAIT",
            "server: expected an RST to end the connection in LAST_ACK",
        ],
    ),
    (
        "fin-wait2-timeout",
        'cli = { "net.ipv4.tcp_fin_timeout" = "1" }\n',
        [
            "client: expected no sockets left at the end, saw TIME_WAIT",
            "server: expected an RST to end the connection in LAST_ACK",
        ],
    ),
    (
        "syn-cookies",
        'srv = { "net.ipv4.tcp_syncookies" = "2" }\n',
        [
            "server: expected at most 50 ms in SYN_RECV, saw",
            "server: expected TcpExtSyncookiesSent to rise by at least 1, saw +0",
        ],
    ),
    (
        "time-wait-buckets",
        'cli = { "net.ipv4.tcp_max_tw_buckets" = "2" }\n',
        [
            "client: expected TIME_WAIT, TIME_WAIT left at the end, saw "
            + ", ".join(["TIME_WAIT"] * 5),
            "client: expected TcpExtTCPTimeWaitOverflow to rise by at least 3, saw +0",
        ],
    ),
    (
        "lost-data",
        '[[proxy.rules]]\naction = "drop"\ntag = "data"\nfrom = "client"\nnth = 1\n',
        [
            "segments: expected client data drop, not seen",
            "client: expected TcpRetransSegs to rise by at least 1, saw +0",
        ],
    ),
    (
        "listen-backlog-overflow",
        ("backlog = 1\n", "backlog = 16\n"),
        [
            "server: expected TcpExtListenOverflows to rise by at least 6, saw +0",
            "server: expected TcpExtListenDrops to rise by at least 6, saw +0",
        ],
    ),
    (
        "lost-last-ack",
        '[[proxy.rules]]\naction = "drop"\ntag = "last-ack"\nnth = 1\n',
        ["client: expected the TIME_WAIT timer to restart"],
    ),
    (
        "close-with-unread-data",
        'unread = "300ms"\n',
        [
            "client: expected errors ECONNRESET, saw none",
            "segments: expected server rst pass",
        ],
    ),
    (
        "server-restart-eaddrinuse",
        "reuseaddr = false\n",
        [
            "server: expected exit status 1, saw 0",
            "server: expected errors EADDRINUSE, saw none",
        ],
    ),
    (
        "server-restart-reuseaddr",
        ("reuseaddr = true", "reuseaddr = false"),
        ["server: expected exit status 0, saw 1"],
    ),
    (
        "keepalive-dead-peer",
        'keepalive_idle = "1s"\nkeepalive_interval = "1s"\nkeepalive_count = 3\n',
        [
            "client: expected errors ETIMEDOUT, saw none",
            "segments: expected client rst after",
        ],
    ),
    (
        "user-timeout",
        'user_timeout = "2s"\n',
        ["client: expected errors ETIMEDOUT, saw none"],
    ),
    (
        # without the abortive close the client keeps TIME_WAIT, and that socket
        # answers the old SYN's SYN-ACK with an ACK instead of the bare RST; the
        # listener resets that ACK
        "old-duplicate-syn",
        ('close = "abort"', 'close = "active"'),
        [
            "client: expected no sockets left at the end, saw TIME_WAIT",
            "segments: expected client rst pass ",
            "segments: expected 0 × server rst, saw 1",
        ],
    ),
    (
        # the server's receive buffer takes it all: no zero window, the FIN leaves
        "fin-wait1-zero-window",
        ("send_bytes = 200000", "send_bytes = 20000"),
        [
            "client: expected at least 3500 ms in FIN_WAIT1, saw",
            "segments: expected 5 × client ack, saw 0",
            "segments: expected 0 × client fin, saw 1",
        ],
    ),
    (
        # the default 120 s RTO ceiling: the probes keep doubling, and the orphan
        # outlives the server's patience (its RST ends it, at 8 s)
        "fin-wait1-zero-window",
        (', "net.ipv4.tcp_rto_max_ms" = "1000"', ""),
        [
            "client: expected at most 7000 ms in FIN_WAIT1, saw",
            "segments: expected client ack 900–1300 ms after the previous one, saw",
        ],
    ),
]


@pytest.mark.parametrize(
    ("name", "removed", "messages"),
    WITHOUT_WHAT_THEY_SHOW,
    ids=[w[0] for w in WITHOUT_WHAT_THEY_SHOW],
)
async def test_without_what_it_shows_a_scenario_fails(
    tmp_path: object, name: str, removed: str | tuple[str, str], messages: list[str]
) -> None:
    """A scenario's expectations fail when what it demonstrates is taken out
    of it (the sysctl, the lost segment): they check the behaviour, not just
    a run that went through."""
    from pathlib import Path

    old, new = removed if isinstance(removed, tuple) else (removed, "")
    text = (scenario.CATALOGUE / f"{name}.toml").read_text()
    assert text.count(old) == 1
    altered = Path(str(tmp_path)) / f"{name}.toml"
    altered.write_text(text.replace(old, new))
    with trio.fail_after(120):
        proc = await trio.run_process(
            [sys.executable, "-m", "tcplab.cli", "verify", str(altered)],
            capture_stdout=True,
            check=False,
        )
    report = proc.stdout.decode()
    assert proc.returncode == 1, report
    for message in messages:
        assert message in report, report
    assert "0/1 scenarios held every expectation" in report
