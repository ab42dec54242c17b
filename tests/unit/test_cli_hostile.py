"""Bad command lines get a clear error naming what was wrong, exit status 2,
and no traceback — before any lab is built (none of these needs root)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tcplab import cli

BIG = "9" * 5000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "lost-syn", "--pace", "abc"], "bad duration 'abc'"),
        (["run", "--drop", f"syn@{BIG}"], "a rule is at most 256 characters"),
        (["run", "--drop", "syn@0"], "nth must be 1 to"),
        (["run", "--drop", "synack@1"], "did you mean 'syn-ack'"),
        (["run", "--delay", "fin@1=forever"], "bad duration"),
        (["run", "--port", "0"], "--port: 0: expected 1 to 65535"),
        (["run", "--port", BIG], "--port"),
        (["run", "--count", "0"], "--count: 0: expected 1 to"),
        (["run", "--concurrency", "0"], "--concurrency: 0: expected 1 to"),
        (["run", "--observe-for", "5h"], "at most 7200s"),
        (["run", "--sysctl", "cli:kernel.panic=1"], "only per-namespace net.* keys"),
        (["run", "--sysctl", "cli:net.ipv4.nope=1"], "no such sysctl"),
        (
            ["run", "--sysctl", "cli:net.ipv4.tcp_fin_timeout=1;reboot"],
            "a number, numbers or a name",
        ),
        (["run", "--sysctl", "somewhere:net.ipv4.tcp_fin_timeout=1"], "SIDE one of cli"),
        (["run", "no-such-scenario"], "no scenario named 'no-such-scenario'"),
        (["run", "/etc/passwd"], "/etc/passwd: not valid TOML"),
        (["show", "lost-syn/../../x"], "no scenario named"),
        (["run", "lost-syn", "--forwarding", "kernel"], "needs the proxy"),
        (["verify", "--jobs", "0"], "--jobs: 0"),
        (["watch", "--netns", "../../etc"], "bad network namespace name"),
        (["watch", "--netns", "tl" + "x" * 300], "bad network namespace name"),
        (["proxy", "add", "--drop", f"fin#{BIG}"], "a rule is at most 256 characters"),
    ],
)
def test_bad_arguments_are_named(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        status = cli.main(argv)
    except SystemExit as stop:
        status = stop.code  # type: ignore[assignment]
    err = capsys.readouterr().err
    assert status in (1, 2), err
    assert message in err
    assert "Traceback" not in err


def test_a_hostile_scenario_file_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evil = tmp_path / "evil.toml"
    evil.write_text("x = " + "[" * 50000 + "]" * 50000 + "\n")
    for command in (["run", str(evil)], ["show", str(evil)], ["verify", str(evil)]):
        with pytest.raises(SystemExit) as stop:
            cli.main(command)
        err = capsys.readouterr().err
        assert stop.value.code == 2 and f"{evil}: not valid TOML" in err
        assert "Traceback" not in err
