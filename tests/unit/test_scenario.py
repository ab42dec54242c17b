"""Scenario files: the catalogue is valid, and each kind of mistake is named
with its file, line and field."""

from __future__ import annotations

import json

import pytest

from tcplab import scenario

GOOD = """
name = "demo"
title = "A demo"
teaches = "What it shows."
teaches_zh = "它展示什么。"

[server]
close = "linger:200ms"

[[proxy.rules]]
action = "drop"
tag = "syn"
nth = 1

[expect.client]
states = ["CLOSED", "SYN_SENT", "ESTABLISHED"]
min_in = { SYN_SENT = "900ms" }

[[expect.segments]]
from = "client"
tag = "syn"
verdict = "drop"
"""


@pytest.mark.parametrize("path", scenario.catalogue(), ids=lambda p: p.stem)
def test_the_catalogue_is_valid(path: object) -> None:
    sc = scenario.load(path)  # type: ignore[arg-type]
    assert sc.name == path.stem  # type: ignore[attr-defined]
    assert sc.teaches and sc.teaches_zh and sc.title
    # every scenario checks something about the run
    expect = sc.expect_client, sc.expect_server
    assert sc.expect_segments or any(e.states or e.errors or e.final is not None for e in expect)


def test_catalogue_has_what_the_course_needs() -> None:
    names = {p.stem for p in scenario.catalogue()}
    assert {
        "handshake-and-teardown", "server-closes-at-once", "server-has-more-to-say",
        "lost-syn", "lost-syn-ack", "lost-handshake-ack", "lost-fin", "lost-fin-ack",
        "lost-last-ack", "time-wait", "close-wait-leak", "time-wait-port-exhaustion",
        "simultaneous-close", "reset-abort", "connection-refused", "syn-timeout",
    } <= names  # fmt: skip


def test_good_file_parses() -> None:
    sc = scenario.parse(GOOD, "demo.toml")
    assert sc.server["close"] == "linger:200ms"
    assert sc.proxy_args() == ["--drop", "syn@1"]
    assert sc.expect_client.min_in == {"SYN_SENT": 0.9}
    assert sc.expect_segments[0].verdict == "drop"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[server]", "[server]\ncolour = 1"), r"demo\.toml:8: server\.colour: unknown key"),
        (
            ('close = "linger:200ms"', 'close = "sometimes"'),
            r"demo\.toml:8: server\.close: unknown policy",
        ),
        (('close = "linger:200ms"', 'close = "linger:2"'), r"server\.close: bad duration '2'"),
        (("nth = 1", "nth = 0"), r"demo\.toml:10: \[\[proxy\.rules\]\] #1: 'nth' must be ≥ 1"),
        (('tag = "syn"\nnth', 'tag = "synack"\nnth'), r"did you mean 'syn-ack'"),
        (
            ('"ESTABLISHED"]', '"ESTABLISHD"]'),
            r"demo\.toml:16: expect\.client\.states: unknown TCP state",
        ),
        (
            ('SYN_SENT = "900ms"', "SYN_SENT = 900"),
            r"demo\.toml:17: expect\.client\.min_in: expected",
        ),
        (
            ('verdict = "drop"', 'verdict = "lost"'),
            r"demo\.toml:22: expect\.segments\.verdict: expected one",
        ),
        (('name = "demo"', 'name = "Demo!"'), r":2: name: use lowercase"),
        (('teaches_zh = "它展示什么。"', ""), r"demo\.toml: file: missing 'teaches_zh'"),
        (("[server]", "[server"), r"demo\.toml: not valid TOML"),
    ],
)
def test_each_mistake_is_named(change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in GOOD
    with pytest.raises(scenario.ScenarioError, match=message):
        scenario.parse(GOOD.replace(old, new, 1), "demo.toml")


def test_sysctls_only_net_and_known_sides() -> None:
    bad = GOOD + '\n[lab.sysctls]\ncli = { "kernel.pid_max" = "1" }\n'
    with pytest.raises(scenario.ScenarioError, match=r"only net\.\* sysctls"):
        scenario.parse(bad, "x.toml")
    bad = GOOD + '\n[lab.sysctls]\nrouter = { "net.ipv4.ip_forward" = "1" }\n'
    with pytest.raises(scenario.ScenarioError, match="unknown side 'router'"):
        scenario.parse(bad, "x.toml")


def test_schema_is_generated_from_the_same_description() -> None:
    schema = scenario.json_schema()
    json.dumps(schema)
    assert set(schema["properties"]) == set(scenario.TOP)
    client = schema["properties"]["expect"]["properties"]["client"]["properties"]
    assert set(client) == set(scenario.SIDE_EXPECT)
    assert schema["required"] == list(scenario.REQUIRED_TOP)


def seg(ts: float, dir: str, tags: list[str], verdict: str = "pass", flags: str = "A") -> dict:  # type: ignore[type-arg]
    return {"ts": ts, "component": "proxy", "event": "segment", "dir": dir, "tags": tags,
            "verdict": verdict, "flags": flags}  # fmt: skip


def state(ts: float, side: str, old: str, new: str, **kw: object) -> dict:  # type: ignore[type-arg]
    return {"ts": ts, "component": side, "event": "tcp_state", "conn": "a:1-b:2", "old": old,
            "new": new, "source": "poll", **kw}  # fmt: skip


def test_check_reports_each_unmet_expectation_in_words() -> None:
    sc = scenario.parse(GOOD, "demo.toml")
    stream = [
        seg(10.0, "c2s", ["syn"], "drop", "S"),
        state(10.001, "client", "CLOSED", "SYN_SENT"),
        seg(11.0, "c2s", ["syn", "retransmit"], "pass", "S"),
        state(11.002, "client", "SYN_SENT", "ESTABLISHED", in_old_ms=1001.0),
    ]
    assert scenario.check(sc, stream, {"client": 0, "server": 0}) == []
    too_quick = [*stream[:3], state(11.002, "client", "SYN_SENT", "ESTABLISHED", in_old_ms=12.0)]
    (failure,) = scenario.check(sc, too_quick, {"client": 0})
    assert "expected at least 900 ms in SYN_SENT, saw 12.0 ms" in failure
    no_drop = [dict(stream[0], verdict="pass"), *stream[1:]]
    (failure,) = scenario.check(sc, no_drop, {"client": 0})
    assert failure == "segments: expected client syn drop, not seen"
