"""The `tcplab` command on a real kernel: lab up/exec/down, watch, run, and
what is left after a run is interrupted or killed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import trio

from core import events, tracefs
from tcplab import topology
from tests.integration.conftest import lab_leftovers

TCPLAB = [sys.executable, "-m", "tcplab.cli"]


def tcplab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TCPLAB, *args], capture_output=True, text=True, timeout=timeout)


def test_lab_up_exec_down() -> None:
    up = tcplab("lab", "up", "--json")
    assert up.returncode == 0, up.stderr
    described = json.loads(up.stdout)
    lab_id = described["lab"]
    slot = described["slot"]
    try:
        assert described["client"]["ipv4"] == f"192.0.2.{slot}"
        ran = tcplab(
            "lab", "exec", "srv", "--lab", lab_id, "--", "ip", "-br", "addr", "show", "srv0"
        )
        assert ran.returncode == 0 and f"198.51.100.{slot}/24" in ran.stdout
        # `clean` keeps a lab made by `lab up`
        assert lab_id in tcplab("clean").stdout
        assert lab_id in topology.lab_namespaces()
    finally:
        down = tcplab("lab", "down", "--lab", lab_id)
    assert down.returncode == 0, down.stderr
    assert lab_id not in topology.lab_namespaces()


def test_lab_up_runs_any_program_through_the_proxy_and_faults_change_live() -> None:
    """curl against http.server through the middlebox; `tcplab proxy add`
    drops the next SYN-ACK and curl's connect takes the server's 1 s
    retransmission; `lab down` stops the proxy and the server with the lab."""
    up = tcplab("lab", "up", "--json")
    assert up.returncode == 0, up.stderr
    described = json.loads(up.stdout)
    lab_id = described["lab"]
    url = f"http://{described['server']['ipv4']}:8000/"
    curl = ["lab", "exec", "cli", "--lab", lab_id, "--", "curl", "-s", "-o", "/dev/null"]
    curl += ["-w", "%{http_code} %{time_connect}", "--max-time", "10", url]
    try:
        http_server = [sys.executable, "-m", "http.server", "8000"]
        server = subprocess.Popen(
            [*TCPLAB, "lab", "exec", "srv", "--lab", lab_id, "--", *http_server],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:  # wait for its listener, as the kernel reports it
            ss = tcplab("lab", "exec", "srv", "--lab", lab_id, "--", "ss", "-Htln", "sport = 8000")
            if ss.stdout.strip():
                break
            assert time.monotonic() < deadline, "http.server never listened"
            time.sleep(0.1)
        code, connect = tcplab(*curl).stdout.split()
        assert code == "200" and float(connect) < 0.5
        added = tcplab("proxy", "add", "--lab", lab_id, "--drop", "syn-ack@1")
        assert added.returncode == 0 and "drop-syn-ack@1" in added.stdout, added.stderr
        code, connect = tcplab(*curl).stdout.split()
        assert code == "200" and 0.9 < float(connect) < 3.0
        status = json.loads(tcplab("proxy", "rules", "--lab", lab_id, "--json").stdout)
        (rule,) = status["rules"]
        # one SYN-ACK dropped per connection: the second curl's
        assert rule["fired"] == 1 and status["counters"]["dropped_rule"] == 1
        bad = tcplab("proxy", "add", "--lab", lab_id, "--drop", "synack@1")
        assert bad.returncode == 2 and "did you mean 'syn-ack'" in bad.stderr
    finally:
        down = tcplab("lab", "down", "--lab", lab_id)
    assert down.returncode == 0, down.stderr
    assert server.wait(timeout=10) is not None
    assert not (topology.RECORD_DIR / f"{lab_id}.proxy.sock").exists()


def test_lab_exec_with_no_lab_says_so() -> None:
    if topology.lab_namespaces():
        pytest.skip("another lab is up on this machine")
    ran = tcplab("lab", "exec", "cli", "--", "true")
    assert ran.returncode == 1 and "no lab is up" in ran.stderr


async def test_watch_prints_transitions_of_any_socket(lab: topology.Lab) -> None:
    """`tcplab watch` on the server namespace sees a listener it did not open."""
    watch = await trio.lowlevel.open_process(
        [
            *TCPLAB,
            "watch",
            "--netns",
            lab.ns("srv"),
            "--port",
            "9090",
            "--log-format",
            "json",
            "--duration",
            "20s",
        ],
        stdout=subprocess.PIPE,
    )
    server = None
    try:
        assert watch.stdout is not None
        lines: list[events.Record] = []
        buf = b""

        async def next_event() -> events.Record:
            nonlocal buf
            while b"\n" not in buf:
                chunk = await watch.stdout.receive_some()  # type: ignore[union-attr]
                assert chunk, "watch exited"
                buf += chunk
            line, _, buf = buf.partition(b"\n")
            record = events.parse_record(line)
            assert record is not None, line
            lines.append(record)
            return record

        with trio.fail_after(15):
            while not isinstance(start := await next_event(), events.ObserverStart):
                pass
            server = await trio.lowlevel.open_process(
                [
                    "ip",
                    "netns",
                    "exec",
                    lab.ns("srv"),
                    sys.executable,
                    "-c",
                    "import socket,time; s=socket.socket(); "
                    f"s.bind(('{lab.addr.server4}',9090)); s.listen(); time.sleep(30)",
                ]
            )
            while not isinstance(event := await next_event(), events.TcpState):
                pass
        # with tracefs, the kernel's own transition; without, a poll
        source = "trace" if "trace" in start.sources else "poll"
        assert source == ("trace" if tracefs.unavailable_reason() is None else "poll")
        assert (event.old, event.new, event.source) == ("CLOSED", "LISTEN", source)
        assert event.conn == f"{lab.addr.server4}:9090"
    finally:
        watch.kill()
        await watch.wait()
        if server is not None:
            server.kill()
            await server.wait()


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL])
@pytest.mark.parametrize(
    "command",
    [["run", "--server-close", "never", "--observe-for", "30s"], ["run", "close-wait-leak"]],
    ids=["ad-hoc", "scenario"],
)
def test_interrupted_run_leaves_nothing_after_clean(
    how: signal.Signals, command: list[str]
) -> None:
    before = lab_leftovers()
    with subprocess.Popen(
        [*TCPLAB, *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as proc:
        try:
            # wait until the conversation is under way (the server leaks CLOSE_WAIT)
            deadline = time.monotonic() + 30
            assert proc.stdout is not None
            for line in proc.stdout:
                if "→ CLOSE_WAIT" in line:  # a state change, not the title
                    break
                assert time.monotonic() < deadline, "run never reached CLOSE_WAIT"
            made = lab_leftovers() - before
            assert made, "the run's lab should exist while it runs"
            proc.send_signal(how)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if how == signal.SIGINT:
        assert proc.returncode == 130
        assert lab_leftovers() == before  # torn down by the run itself
    # after SIGKILL the daemons and namespaces are left; `clean` removes them
    tcplab("clean")
    assert lab_leftovers() == before
    labs = {name.removeprefix(topology.PREFIX).rpartition("-")[0] for name in made}
    for lab_id in labs:
        assert tracefs.instance_names(f"{topology.TRACE_PREFIX}{lab_id}-") == []
        # the run's daemons were started with --netns tl<lab>-…
        daemons = subprocess.run(
            ["pgrep", "-f", f"--netns {topology.PREFIX}{lab_id}-"], capture_output=True, text=True
        ).stdout.split()
        assert daemons == [], f"processes of lab {lab_id} left: {daemons}"
