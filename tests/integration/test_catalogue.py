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
