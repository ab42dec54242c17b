"""Runs stopped at random moments leave nothing behind.

Twenty runs of a scenario: a third interrupted (SIGINT, Ctrl-C), a third
killed outright (SIGKILL: a crashed laptop), a third left to finish, each at
a random moment from the first milliseconds (the command still importing)
to the teardown.  After a SIGKILL the run's daemons must be gone within a
second (they die with their parent); after the next ``tcplab`` command has
started, no namespace, ftrace instance or /run/tcplab file of the run may be
left (every command reaps labs whose owner is gone).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core import tracefs
from tcplab import topology
from tests.integration.conftest import descends_from_us, lab_leftovers, ours

TCPLAB = [sys.executable, "-m", "tcplab.entry"]
CHILDREN_END_S = 20.0
"""How long a killed run's children may take to end (a deadline, not a
measure: the test reports how many took more than a second)."""
RUNS = 20


def children_of(pid: int) -> list[int]:
    """Processes started for run ``pid``: they carry its pid in their
    environment (core.proc.PARENT_ENV), whoever their parent is now."""
    marker = f"TCPLAB_PARENT_PID={pid}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def run_files() -> set[str]:
    """Files in /run/tcplab of labs this test answers for (not those of a
    `tcplab verify` running alongside)."""
    if not topology.RECORD_DIR.is_dir():
        return set()
    found = {
        p
        for p in topology.RECORD_DIR.iterdir()
        if not p.name.startswith(".") and ours(p.name.split(".")[0])
    }
    # a lab torn down meanwhile by its owner (elsewhere) looked ownerless
    return {p.name for p in found if p.exists()}


def our_traces() -> set[str]:
    """ftrace instances this test answers for: its labs' (tcplab-<lab>-<side>)
    and those of its own processes (tcplab-<kind>-<pid>-…) or of dead ones."""

    def mine(name: str) -> bool:
        owner = name.removeprefix(topology.TRACE_PREFIX)
        pid = owner.partition("-")[2].partition("-")[0]
        if pid.isdigit():
            return descends_from_us(int(pid)) or not Path(f"/proc/{pid}").exists()
        return ours(owner.rpartition("-")[0])

    found = {n for n in tracefs.instance_names(topology.TRACE_PREFIX) if mine(n)}
    # one removed meanwhile by its owner (elsewhere) looked ownerless
    return found & set(tracefs.instance_names(topology.TRACE_PREFIX))


@pytest.mark.slow
def before_our_code(how: str, err: str) -> bool:
    """Ctrl-C so early that the interpreter itself was still starting (its
    own ``runpy``, ``site``, importlib): CPython prints that traceback before
    any of tcplab's code runs, and nothing has been built yet (which the
    checks after it confirm)."""
    return (
        how == "SIGINT"
        and err.rstrip().endswith("KeyboardInterrupt")
        and "/tcplab/" not in err
        and "/daemons/" not in err
        and "/proxy/" not in err
        and "/core/" not in err
    )


def test_runs_stopped_at_random_moments_leave_nothing() -> None:
    seed = int(os.environ.get("TCPLAB_LEAK_SEED", str(int(time.time()))))
    rng = random.Random(seed)
    before_labs = lab_leftovers()
    before_files = run_files()
    before_traces = our_traces()
    counts = {"SIGINT": 0, "SIGKILL": 0, "finished": 0}
    late_children = 0
    for i in range(RUNS):
        how = ("SIGINT", "SIGKILL", "finished")[i % 3]
        at = rng.uniform(0.0, 4.0)
        proc = subprocess.Popen(
            [*TCPLAB, "run", "lost-fin"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        if how != "finished":
            try:
                proc.wait(timeout=at)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT if how == "SIGINT" else signal.SIGKILL)
        _out, err = proc.communicate(timeout=60)
        counts[how] += 1
        where = f"run {i} ({how} at {at:.2f} s, seed {seed})"
        assert "Traceback" not in err or before_our_code(how, err), f"{where}: {err}"
        if how == "SIGKILL":
            # its children get SIGTERM as it dies (PR_SET_PDEATHSIG) and end
            # in order, flushing their lines: quick, but a loaded machine may
            # take longer than a second; they must end, and how many were
            # still there after one second is reported
            killed = time.monotonic()
            late = False
            while children_of(proc.pid) and time.monotonic() < killed + CHILDREN_END_S:
                if not late and time.monotonic() > killed + 1.0:
                    late = True
                    late_children += len(children_of(proc.pid))
                time.sleep(0.02)
            left = children_of(proc.pid)
            assert left == [], f"{where}: processes of the killed run alive {CHILDREN_END_S} s on"
        else:
            # -SIGINT: Ctrl-C before the interpreter had its handler (a loaded
            # machine can take longer than `at` to start Python): nothing
            # had been built, which the checks below confirm
            ended = (0, 1, 130, -signal.SIGINT)
            assert proc.returncode in ended, f"{where}: exit {proc.returncode}: {err}"
            assert lab_leftovers() == before_labs, f"{where}: the run left its lab"
        # the next command cleans up after a killed run before anything else
        status = subprocess.run([*TCPLAB, "lab", "status"], capture_output=True, text=True)
        assert status.returncode == 0, status.stderr
        assert lab_leftovers() == before_labs, f"{where}: namespaces left"
        assert run_files() <= before_files, f"{where}: files left: {run_files() - before_files}"
        traces = our_traces() - before_traces
        assert not traces, f"{where}: ftrace instances left: {traces}"
    print(
        f"\nleak test (seed {seed}): {counts}; processes alive 1 s after SIGKILL: {late_children}"
    )
    assert sum(counts.values()) == RUNS
