"""Scenario files: the catalogue is valid, and each kind of mistake is named
with its file, line and field."""

from __future__ import annotations

import dataclasses
import json
import re
import string
from pathlib import Path
from typing import Any

import pytest

from core import events, rules
from core.events import Segment, TcpState
from tcplab import scenario
from tcplab.scenario.check import LANGS, MESSAGES, outcome

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


CHINESE = re.compile(r"[\u4e00-\u9fff]")
"""A CJK ideograph: the text is (at least partly) in Chinese."""


@pytest.mark.parametrize("path", scenario.catalogue(), ids=lambda p: p.stem)
def test_every_catalogue_scenario_has_a_chinese_title(path: object) -> None:
    sc = scenario.load(path)  # type: ignore[arg-type]
    assert CHINESE.search(sc.title_zh), f"{sc.name}: title_zh {sc.title_zh!r}"
    assert sc.title_in("zh") == sc.title_zh and sc.title_in("en") == sc.title


def test_the_chinese_title_is_optional_and_in_the_schema() -> None:
    sc = scenario.parse(GOOD, "demo.toml")
    assert sc.title_zh == "" and sc.title_in("zh") == "A demo"
    titled = scenario.parse(GOOD.replace('title = "A demo"', 'title = "A demo"\ntitle_zh = "演示"'))
    assert titled.title_in("zh") == "演示"
    assert "title_zh" in scenario.json_schema()["properties"]
    with pytest.raises(scenario.ScenarioError, match=r"demo\.toml:4: title_zh: "):
        scenario.parse(
            GOOD.replace('title = "A demo"', 'title = "A demo"\ntitle_zh = 3'), "demo.toml"
        )


def test_catalogue_has_what_the_course_needs() -> None:
    names = {p.stem for p in scenario.catalogue()}
    assert {
        "handshake-and-teardown", "server-closes-at-once", "server-has-more-to-say",
        "lost-syn", "lost-syn-ack", "lost-handshake-ack", "lost-fin", "lost-fin-ack",
        "lost-last-ack", "time-wait", "close-wait-leak", "time-wait-port-exhaustion",
        "simultaneous-close", "reset-abort", "connection-refused", "syn-timeout",
        "no-time-wait", "fin-wait2-timeout", "syn-cookies", "time-wait-buckets",
    } <= names  # fmt: skip


def test_good_file_parses() -> None:
    sc = scenario.parse(GOOD, "demo.toml")
    assert sc.server["close"] == "linger:200ms"
    proxy = sc.proxy_options()
    assert [(r.action, rules.format_rule(r)) for r in proxy.rules] == [("drop", "syn@1")]
    assert sc.expect_client.min_in == {"SYN_SENT": 0.9}
    assert sc.expect_segments[0].verdict == "drop"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("[server]", "[server]\ncolour = 1"), r"demo\.toml:8: server\.colour: unknown key"),
        (
            ('close = "linger:200ms"', 'close = "sometimes"'),
            r"demo\.toml:8: server\.close: unknown close policy 'sometimes'",
        ),
        (('close = "linger:200ms"', 'close = "linger:2"'), r"server\.close: bad duration '2'"),
        (
            ("nth = 1", "nth = 0"),
            r"demo\.toml:13: proxy\.rules\.nth: expected a whole number, 1 to 1000000",
        ),
        (('tag = "syn"\nnth', 'tag = "synack"\nnth'), r"did you mean 'syn-ack'"),
        (
            ('"ESTABLISHED"]', '"ESTABLISHD"]'),
            r"demo\.toml:16: expect\.client\.states: unknown value 'ESTABLISHD' "
            r"\(did you mean 'ESTABLISHED'\?\)",
        ),
        (
            ('SYN_SENT = "900ms"', "SYN_SENT = 900"),
            r"demo\.toml:17: expect\.client\.min_in: expected",
        ),
        (
            ('verdict = "drop"', 'verdict = "lost"'),
            r"demo\.toml:22: expect\.segments\.verdict: unknown value 'lost'",
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


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            'keepalive_idle = "1500ms"',
            r"client\.keepalive_idle: expected a duration in whole seconds",
        ),
        ('keepalive_interval = "0s"', r"client\.keepalive_interval: expected a duration from 1s"),
        ("keepalive_count = 128", r"client\.keepalive_count: expected a whole number, 1 to 127"),
        ('user_timeout = "1500us"', r"client\.user_timeout: expected a duration in whole milli"),
        ("send_bytes = 0", r"client\.send_bytes: expected a whole number, 1 to 1000000"),
        ('send_bytes = "64k"', r"client\.send_bytes: expected a whole number"),
    ],
)
def test_a_socket_option_the_kernel_would_not_take_is_named(line: str, message: str) -> None:
    with pytest.raises(scenario.ScenarioError, match=message):
        scenario.parse(GOOD.replace("[server]", f"[client]\n{line}\n\n[server]", 1), "demo.toml")


def test_the_socket_options_parse() -> None:
    text = GOOD.replace(
        "[server]",
        '[client]\nkeepalive_idle = "2s"\nkeepalive_count = 4\nuser_timeout = "1500ms"\n'
        "send_bytes = 200000\n\n"
        '[server]\nunread = "100ms"\nreuseaddr = false\nrestart = true\nno_accept = true',
        1,
    )
    sc = scenario.parse(text, "demo.toml")
    assert sc.server["no_accept"] is True
    assert (sc.client["keepalive_idle"], sc.client["keepalive_count"]) == (2.0, 4)
    assert sc.client["user_timeout"] == 1.5
    assert sc.client["send_bytes"] == 200_000
    assert (sc.server["unread"], sc.server["reuseaddr"], sc.server["restart"]) == (0.1, False, True)


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
    assert set(client) == set(scenario.spec.SIDE_EXPECT)
    assert schema["required"] == list(scenario.REQUIRED_TOP)
    # the allowed values come from the same tables the checker uses
    server = schema["properties"]["server"]["properties"]
    assert server["port"]["minimum"] == 1 and server["port"]["maximum"] == 65535
    assert server["close"]["pattern"].startswith("^(immediate")
    segment = schema["properties"]["expect"]["properties"]["segments"]["items"]["properties"]
    assert segment["from"] == {"enum": ["client", "server"], "description": "client | server"}
    assert set(segment["verdict"]["enum"]) == set(events.VERDICTS)
    log_segments = schema["properties"]["proxy"]["properties"]["log_segments"]
    assert log_segments["enum"] == ["all", "control", "none"]
    rule = schema["properties"]["proxy"]["properties"]["rules"]["items"]
    assert rule["required"] == ["action"] and rule["additionalProperties"] is False


MINIMAL = {"name": "x", "title": "t", "teaches": "a", "teaches_zh": "b"}


@pytest.mark.parametrize(
    "document",
    [
        MINIMAL,
        {**MINIMAL, "server": {"close": "first:0", "port": 8080}, "client": {"count": 3},
         "expect": {"segments": [{"from": "client", "tag": "syn", "verdict": "drop"}]}},
        {**MINIMAL, "expect": {
            "client": {"timer_restarted": {"TIME_WAIT": "150ms"}},
            "server": {"listener": ["CLOSED", "LISTEN"], "reset_in": ["LAST_ACK"]}}},
    ],
)  # fmt: skip
def test_what_the_checker_allows_the_schema_allows(document: dict[str, Any]) -> None:
    scenario.parse(_toml(document), "x.toml")
    _validate(document, scenario.json_schema())


@pytest.mark.parametrize(
    ("document", "field"),
    [
        ({"server": {"port": 0}}, "server.port"),
        ({"server": {"port": 70000}}, "server.port"),
        ({"server": {"close": "sometimes"}}, "server.close"),
        ({"client": {"count": 0}}, "client.count"),
        ({"client": {"concurrency": 0}}, "client.concurrency"),
        ({"client": {"close": "later"}}, "client.close"),
        ({"proxy": {"log_segments": "some"}}, "proxy.log_segments"),
        ({"expect": {"segments": [{"from": "router"}]}}, "expect.segments.from"),
        ({"expect": {"client": {"exit": 256}}}, "expect.client.exit"),
        ({"name": "Demo!"}, "name"),
    ],
)
def test_what_the_checker_refuses_the_schema_refuses(document: dict[str, Any], field: str) -> None:
    bad = {**MINIMAL, **document}
    with pytest.raises(scenario.ScenarioError, match=rf": {re.escape(field)}: "):
        scenario.parse(_toml(bad), "x.toml")
    with pytest.raises(ValueError, match="schema"):
        _validate(bad, scenario.json_schema())


def test_a_duration_out_of_range_is_refused_and_the_schema_says_the_range() -> None:
    # JSON Schema cannot compare durations written as text: the range is in
    # the description
    with pytest.raises(scenario.ScenarioError, match=r"proxy\.pace: expected a duration from"):
        scenario.parse(_toml({**MINIMAL, "proxy": {"pace": "20000s"}}), "x.toml")
    pace = scenario.json_schema()["properties"]["proxy"]["properties"]["pace"]
    assert pace["description"].endswith("(0s to 3600s)")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("count = " + "9" * 5000, "not valid TOML"),
        ("x = " + "[" * 50000 + "]" * 50000, "not valid TOML"),
        ("x = 1\n" + "#" * 300_000, "at most 256 KiB"),
    ],
)
def test_hostile_files_get_an_error_naming_the_file(text: str, message: str) -> None:
    with pytest.raises(scenario.ScenarioError, match=rf"^evil\.toml: .*{message}"):
        scenario.parse(text, "evil.toml")


def test_sysctls_are_checked_before_anything_starts() -> None:
    def with_sysctl(line: str) -> str:
        return _toml(MINIMAL) + "[lab.sysctls]\n" + line + "\n"

    scenario.parse(with_sysctl('cli = { "net.ipv4.tcp_fin_timeout" = 5 }'), "x.toml")
    for line, why in [
        ('cli = { "net.ipv4.tcp_fin_timeot" = 5 }', "no such sysctl on this kernel"),
        ('cli = { "net.ipv4.tcp_fin_timeout" = "5; reboot" }', "a number, numbers or a name"),
        ('cli = { "kernel.panic" = 1 }', "only net.* sysctls"),
    ]:
        with pytest.raises(scenario.ScenarioError, match=rf"x\.toml:\d+: lab\.sysctls: .*{why}"):
            scenario.parse(with_sysctl(line), "x.toml")


def _toml(document: dict[str, Any]) -> str:
    """A small TOML writer for the documents above."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(v)

    return "\n".join(f"{k} = {value(v)}" for k, v in document.items()) + "\n"


def _validate(document: Any, schema: dict[str, Any], where: str = "") -> None:
    """Just enough JSON Schema (the keywords json_schema uses) to hold a
    document against it; ValueError naming where it fails."""

    def fail(why: str) -> None:
        raise ValueError(f"schema: {where or 'document'}: {why}")

    if "enum" in schema and document not in schema["enum"]:
        fail(f"{document!r} not in enum")
    if "oneOf" in schema:
        for option in schema["oneOf"]:
            try:
                _validate(document, option, where)
                break
            except ValueError:
                continue
        else:
            fail("matches no option")
    kind = schema.get("type")
    if kind == "integer":
        if not isinstance(document, int) or isinstance(document, bool):
            fail("not an integer")
        if "minimum" in schema and document < schema["minimum"]:
            fail("below minimum")
        if "maximum" in schema and document > schema["maximum"]:
            fail("above maximum")
    if kind == "string":
        if not isinstance(document, str):
            fail("not a string")
        if "pattern" in schema and not re.search(schema["pattern"], document):
            fail("does not match the pattern")
    if kind == "array":
        if not isinstance(document, list):
            fail("not an array")
        for i, item in enumerate(document):
            _validate(item, schema.get("items", {}), f"{where}[{i}]")
    if kind == "object":
        if not isinstance(document, dict):
            fail("not an object")
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in document:
                fail(f"missing {key}")
        for key, item in document.items():
            if key in properties:
                _validate(item, properties[key], f"{where}.{key}".lstrip("."))
            elif schema.get("additionalProperties") is False:
                fail(f"unknown {key}")


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
        match=r"demo\.toml:\d+: expect\.segments\.without: unknown value 'resend'",
    ):
        scenario.parse(text.replace('"retransmit"]', '"resend"]'), "demo.toml")


def _with_expect(table: str, lines: str) -> scenario.Scenario:
    return scenario.parse(_toml(MINIMAL) + f"[expect.{table}]\n{lines}\n", "x.toml")


def test_the_listener_states() -> None:
    sc = _with_expect("server", 'listener = ["CLOSED", "LISTEN", "CLOSED"]')
    listen = dataclasses.replace(state(1.0, "server", "CLOSED", "LISTEN"), conn="b:2")
    closed = dataclasses.replace(state(2.0, "server", "LISTEN", "CLOSED"), conn="b:2")
    # a connection's records are not the listener's
    child = state(1.5, "server", "LISTEN", "SYN_RECV")
    assert scenario.check(sc, [listen, child, closed], {}) == []
    assert scenario.check(sc, [child, closed], {}) == [
        "server: expected listener states CLOSED → LISTEN → CLOSED, saw CLOSED (b:2)"
    ]
    assert scenario.check(sc, [child], {}) == [
        "server: expected listener states CLOSED → LISTEN → CLOSED, saw CLOSED"
    ]
    with pytest.raises(scenario.ScenarioError, match=r"x\.toml:6: expect\.server\.listener"):
        _with_expect("server", 'listener = ["LISTENING"]')


def _stop(ts: float, side: str, *remaining: dict[str, Any]) -> events.ObserverStop:
    return events.ObserverStop(ts=ts, component=side, reason="deadline", remaining=remaining)


def test_a_reset_ends_the_connection_in_a_state() -> None:
    sc = _with_expect("server", 'reset_in = ["LAST_ACK"]')
    start = [
        state(1.0, "server", "CLOSED", "SYN_RECV"),
        state(1.001, "server", "SYN_RECV", "ESTABLISHED"),
        state(1.002, "server", "ESTABLISHED", "CLOSE_WAIT"),
        state(1.003, "server", "CLOSE_WAIT", "LAST_ACK"),
    ]
    rst = seg(1.2, "c2s", ["rst"], flags="R")
    # polled: the change happened in (seen_after, ts], the RST inside
    closed = state(1.205, "server", "LAST_ACK", "CLOSED", seen_after=1.19)
    assert scenario.check(sc, [*start, rst, closed], {}) == []
    ack = seg(1.2, "c2s", ["last-ack"])
    assert scenario.check(sc, [*start, ack, closed], {}) == [
        "server: expected an RST to end the connection in LAST_ACK, none reached it before it "
        "closed (t=+205.0 ms)"
    ]
    # an RST the middlebox dropped reached nobody
    dropped = dataclasses.replace(rst, verdict="drop")
    assert "none reached it" in scenario.check(sc, [*start, dropped, closed], {})[0]
    # one that came after the connection had closed did not close it
    late = dataclasses.replace(rst, ts=1.3)
    assert "none reached it" in scenario.check(sc, [*start, closed, late], {})[0]
    assert scenario.check(sc, start, {}) == [
        "server: expected an RST to end the connection in LAST_ACK, it did not leave LAST_ACK"
    ]
    assert scenario.check(sc, start[:3], {}) == [
        "server: expected an RST to end the connection in LAST_ACK, it was never in LAST_ACK"
    ]


def test_a_timer_that_restarts() -> None:
    sc = _with_expect("client", 'timer_restarted = { TIME_WAIT = "150ms" }')
    entered = [
        state(1.0, "client", "CLOSED", "SYN_SENT"),
        state(1.001, "client", "SYN_SENT", "ESTABLISHED"),
        state(1.002, "client", "ESTABLISHED", "FIN_WAIT1"),
        # the full socket hands over to a timewait socket (no timer in the
        # trace record), then the poll reads the minisock's 60 s
        state(1.003, "client", "FIN_WAIT1", "CLOSED", handed_to="timewait",
              handed_state="TIME_WAIT"),
        state(1.004, "client", "FIN_WAIT1", "TIME_WAIT", expires_ms=60000, timer="timewait"),
    ]  # fmt: skip
    conn = {"conn": "a:1-b:2", "state": "TIME_WAIT", "timer": "timewait"}
    # 2 s later 58.2 s are left, not 58.0: the timer was re-armed 0.2 s in
    restarted = _stop(3.004, "client", {**conn, "expires_ms": 58200})
    assert scenario.check(sc, [*entered, restarted], {}) == []
    ran_on = _stop(3.004, "client", {**conn, "expires_ms": 58000})
    assert scenario.check(sc, [*entered, ran_on], {}) == [
        "client: expected the TIME_WAIT timer to restart (to end at least 150 ms later than "
        "its timer said when TIME_WAIT began), saw +0.0 ms"
    ]
    # seen to end: when it ended stands for the timer's end (never early)
    expired = state(61.3, "client", "TIME_WAIT", "CLOSED", seen_after=61.295)
    assert scenario.check(sc, [*entered, expired, _stop(61.4, "client")], {}) == []
    killed = state(2.0, "client", "TIME_WAIT", "CLOSED", seen_after=1.995)
    assert "saw -59009.0 ms" in scenario.check(sc, [*entered, killed], {})[0]
    assert scenario.check(sc, [*entered, _stop(3.004, "client")], {}) == [
        "client: expected the TIME_WAIT timer to restart, saw neither TIME_WAIT end nor its "
        "timer at the end"
    ]
    assert scenario.check(sc, entered[:3], {}) == [
        "client: expected the TIME_WAIT timer to restart, saw no TIME_WAIT timer"
    ]
    with pytest.raises(scenario.ScenarioError, match=r"expect\.client\.timer_restarted"):
        _with_expect("client", 'timer_restarted = { TIME_WAIT = "soon" }')


# --- the failures in Chinese -------------------------------------------------------

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")

FAILING = {
    # the recorded lost-last-ack run, against expectations it does not meet
    'exit = 0\nfinal = ["TIME_WAIT"]': 'exit = 1\nfinal = []\nreset_in = ["FIN_WAIT1"]',
    'timer_restarted = { TIME_WAIT = "150ms" }': 'timer_restarted = { TIME_WAIT = "1s" }',
    'min_in = { LAST_ACK = "180ms" }': 'min_in = { LAST_ACK = "5s" }\n'
    'max_in = { CLOSE_WAIT = "0ms" }\nlistener = ["CLOSED", "LISTEN"]\n'
    'errors = ["ECONNRESET"]\ncounters = { TcpExtListenOverflows = 1 }',
    'after = ["180ms", "1500ms"]': 'after = ["10ms", "20ms"]',
}
MORE_SEGMENTS = """
[[expect.segments]]
from = "server"
tag = "syn-ack"
count = 2

[[expect.segments]]
from = "client"
tag = "rst"
without = ["retransmit"]
"""


def _recorded_lost_last_ack() -> list[events.Record]:
    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "timeline" / "lost-last-ack.jsonl"
    parsed = (events.parse_record(line) for line in fixture.read_text().splitlines())
    return [r for r in parsed if r is not None]


def test_the_failures_in_chinese_say_the_same_with_the_same_numbers() -> None:
    records = _recorded_lost_last_ack()
    statuses = {"client": 0, "server": 0}
    path = scenario.find("lost-last-ack")
    assert scenario.check(scenario.load(path), records, statuses, "zh") == []
    text = path.read_text()
    for old, new in FAILING.items():
        assert old in text
        text = text.replace(old, new)
    sc = scenario.parse(text + MORE_SEGMENTS, "x.toml")
    english = scenario.check(sc, records, statuses)
    chinese = scenario.check(sc, records, statuses, "zh")
    assert len(english) == len(chinese) == 12
    assert "client: expected no sockets left at the end, saw TIME_WAIT" in english
    assert "segments: expected client rst (not retransmit) after t=+220.6 ms, not seen" in english
    for en, zh in zip(english, chinese, strict=True):
        assert CHINESE.search(zh) and not CHINESE.search(en), (en, zh)
        assert NUMBER.findall(zh) == NUMBER.findall(en), (en, zh)
    assert "服务端：应有内核计数器的读数，观察进程却没有报告" in chinese
    assert "报文段：应恰好有 2 个服务端发出的 syn-ack，实际 1 个" in chinese


def test_every_message_has_both_languages_with_the_same_fields() -> None:
    for key, templates in MESSAGES.items():
        assert set(templates) == set(LANGS), key
        fields = [
            {name for _, name, _, _ in string.Formatter().parse(t) if name}
            for t in templates.values()
        ]
        assert all(f == fields[0] for f in fields), key


def test_the_end_of_a_report_in_either_language() -> None:
    assert outcome([], ["x before y"]) == [
        "every expectation held ✓",
        "  ✗ causal order: x before y",
    ]
    assert outcome(["a", "b"], lang="zh") == ["有 2 项预期未满足：", "  ✗ a", "  ✗ b"]
