"""Scenario files: the catalogue is valid, and each kind of mistake is named
with its file, line and field."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tcplab import scenario
from tcplab.events import Segment, TcpState

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


def seg(ts: float, dir: str, tags: list[str], verdict: str = "pass", flags: str = "A") -> Segment:
    return Segment(ts=ts, component="proxy", conn="a:1-b:2", dir=dir, flags=flags, seq=0,  # type: ignore[arg-type]
                   ack=0, rseq=0, rack=0, len=0, tags=tuple(tags), verdict=verdict)  # type: ignore[arg-type]  # fmt: skip


def state(ts: float, side: str, old: str, new: str, **kw: object) -> TcpState:
    return TcpState(ts=ts, component=side, conn="a:1-b:2", old=old, new=new, **kw)  # type: ignore[arg-type]


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
    no_drop = [dataclasses.replace(stream[0], verdict="pass"), *stream[1:]]  # type: ignore[type-var]
    (failure,) = scenario.check(sc, no_drop, {"client": 0})
    assert failure == "segments: expected client syn drop, not seen"


def test_segments_without_a_tag() -> None:
    text = (
        GOOD
        + """
[[expect.segments]]
tag = "syn"
without = ["retransmit"]
count = 1
"""
    )
    sc = scenario.parse(text, "demo.toml")
    stream = [
        seg(10.0, "c2s", ["syn"], "drop", "S"),
        seg(11.0, "c2s", ["syn", "retransmit"], "pass", "S"),
    ]
    assert scenario.check(sc, stream, {}) == ["client: expected connection 1, saw 0"]
    again = [*stream, seg(12.0, "c2s", ["syn"], "pass", "S")]
    assert "segments: expected 1 × syn (not retransmit), saw 2" in scenario.check(sc, again, {})
    with pytest.raises(
        scenario.ScenarioError,
        match=r"demo.toml:\d+: expect.segments.without: unknown tag 'resend'",
    ):
        scenario.parse(text.replace('"retransmit"]', '"resend"]'), "demo.toml")
