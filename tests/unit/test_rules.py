"""The rule engine: matching, per-connection counting, pace, queues, parsing."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import rules as grammar
from proxy import rules


@dataclasses.dataclass
class Seg:
    tags: tuple[str, ...]
    dir: str = "c2s"
    conn_number: int = 1
    counters: dict[str, int] = dataclasses.field(default_factory=dict)


def engine(*specs: tuple[str, str], pace: float | None = None) -> rules.RuleEngine:
    return rules.RuleEngine([grammar.parse_cli(a, t) for a, t in specs], pace=pace)


def test_nth_counts_per_connection() -> None:
    e = engine(("drop", "syn-ack@1"))
    conn1: dict[str, int] = {}
    conn2: dict[str, int] = {}
    first = e.decide(Seg(("syn-ack",), "s2c", 1, conn1), 0.0)
    again = e.decide(Seg(("syn-ack", "retransmit"), "s2c", 1, conn1), 1.0)
    other = e.decide(Seg(("syn-ack",), "s2c", 2, conn2), 1.0)
    assert (first.action, again.action, other.action) == ("drop", "pass", "drop")
    assert first.rule == "drop-syn-ack@1"
    assert e.fired["drop-syn-ack@1"] == 2 and e.matched["drop-syn-ack@1"] == 3


def test_counts_die_with_the_connection() -> None:
    e = engine(("drop", "fin@1"))
    counters: dict[str, int] = {}
    assert e.decide(Seg(("fin",), counters=counters), 0).action == "drop"
    assert counters == {"drop-fin@1": 1}
    assert e.decide(Seg(("fin",), counters={}), 0).action == "drop"  # a new flow's dict


def test_direction_connection_and_nth_lists() -> None:
    e = engine(("drop", "server:fin@1,3#2"))
    counters: dict[str, int] = {}
    assert e.decide(Seg(("fin",), "c2s", 2, counters), 0).action == "pass"
    assert e.decide(Seg(("fin",), "s2c", 1, {}), 0).action == "pass"
    verdicts = [e.decide(Seg(("fin",), "s2c", 2, counters), 0).action for _ in range(4)]
    assert verdicts == ["drop", "pass", "drop", "pass"]


def test_first_match_wins_but_every_match_counts() -> None:
    e = engine(("drop", "fin@1"), ("delay", "fin@2=1s"))
    counters: dict[str, int] = {}
    first = e.decide(Seg(("fin",), counters=counters), 10.0)
    second = e.decide(Seg(("fin",), counters=counters), 10.0)
    assert first.action == "drop"
    assert (second.action, second.send_at, second.rule) == ("delay", 11.0, "delay-fin@2")


def test_any_tag_and_duplicate_hold_reset() -> None:
    e = engine(("hold", "server:fin@1"), ("duplicate", "data@2"), ("reset", "any@5"))
    counters: dict[str, int] = {}
    assert e.decide(Seg(("fin",), "s2c", counters=counters), 0).action == "hold"
    assert e.decide(Seg(("data",), counters=counters), 0).action == "pass"
    dup = e.decide(Seg(("data",), counters=counters), 0)
    assert (dup.action, dup.send_at) == ("duplicate", 0)
    assert e.decide(Seg(("ack",), counters=counters), 0).action == "pass"
    assert e.decide(Seg(("ack",), counters=counters), 0).action == "reset"


def test_pace_delays_everything_and_adds_to_delays() -> None:
    e = engine(("delay", "fin@1=2s"), pace=0.25)
    assert e.decide(Seg(("ack",)), 1.0).send_at == pytest.approx(1.25)
    delayed = e.decide(Seg(("fin",)), 1.0)
    assert delayed.send_at == pytest.approx(3.25) and delayed.delay == pytest.approx(2.25)
    e.set_pace(None)
    assert e.decide(Seg(("ack",)), 1.0).send_at == 1.0


def test_delay_queue_keeps_order_for_equal_times() -> None:
    q = rules.DelayQueue(capacity=4)
    for name, at in (("a", 2.0), ("b", 1.0), ("c", 2.0), ("d", 1.0)):
        assert q.push(name, at)
    assert not q.push("e", 0.0)  # full
    assert q.next_due() == 1.0
    assert q.pop_due(0.5) == []
    assert q.pop_due(1.0) == ["b", "d"]
    assert q.pop_due(5.0) == ["a", "c"]
    assert q.next_due() is None


def test_hold_queue_releases_by_rule_in_arrival_order() -> None:
    q = rules.HoldQueue()
    for item, rule in (("x", "r1"), ("y", "r2"), ("z", "r1")):
        q.hold(item, rule)
    assert q.held_by() == {"r1": 2, "r2": 1}
    assert q.release("r1") == ["x", "z"]
    assert q.release() == ["y"] and len(q) == 0


def test_add_remove_and_names() -> None:
    e = engine(("drop", "syn@1"))
    again = e.add(grammar.parse_cli("drop", "syn@1"))
    assert again.name == "drop-syn@1#2"
    named = grammar.parse_table({"action": "drop", "tag": "fin", "name": "lose-fin"}, "t")
    e.add(named)
    with pytest.raises(grammar.RuleError, match="'lose-fin' exists already"):
        e.add(named)
    assert e.remove("drop-syn@1").name == "drop-syn@1"
    with pytest.raises(KeyError, match="no rule named 'nope'"):
        e.remove("nope")
    assert [r["name"] for r in e.describe()] == ["drop-syn@1#2", "lose-fin"]


@pytest.mark.parametrize(
    ("action", "text", "message"),
    [
        ("delay", "fin@1", r"--delay fin@1: a delay needs a duration, e\.g\. fin@1=2s"),
        ("drop", "synack@1", r"--drop synack@1: unknown tag 'synack' \(did you mean 'syn-ack'\?\)"),
        ("drop", "fin@0", r"--drop fin@0: nth must be 1 to 1000000"),
        ("drop", "fin@1=2s", r"--drop fin@1=2s: only a delay takes '=DURATION'"),
        ("drop", "middle:fin", r"--drop middle:fin: expected \[client:\|server:\]TAG"),
        ("delay", "fin@1=2", r"--delay fin@1=2: bad duration '2'.*add a unit"),
        ("explode", "fin", r"--explode fin: unknown action"),
    ],
)
def test_cli_errors_name_the_rule_and_the_reason(action: str, text: str, message: str) -> None:
    with pytest.raises(grammar.RuleError, match=message):
        grammar.parse_cli(action, text)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"action": "drop", "tag": "fin", "colour": "red"}, "unknown key 'colour'"),
        ({"action": "lose", "tag": "fin"}, "'action' must be one of"),
        ({"action": "drop", "tag": "fin", "nth": "1"}, "'nth' must be a number"),
        ({"action": "drop", "tag": "fin", "from": "middle"}, "'from' must be"),
        ({"action": "delay", "tag": "fin"}, "a delay rule needs delay"),
        ({"action": "drop", "tag": "fin", "conn": 0}, "'conn' must be"),
    ],
)
def test_table_errors_say_where(table: dict[str, object], message: str) -> None:
    with pytest.raises(grammar.RuleError, match=f"^lab.toml: \\[\\[rules\\]\\] #2: .*{message}"):
        grammar.parse_table(table, "lab.toml: [[rules]] #2")


def test_table_rule() -> None:
    rule = grammar.parse_table(
        {"action": "delay", "tag": "fin", "from": "client", "nth": [1, 2], "delay": "1.5s"}, "t"
    )
    assert rule.match == grammar.Match("fin", "client", frozenset({1, 2}), None)
    assert rule.delay == 1.5 and grammar.format_rule(rule) == "client:fin@1,2=1500ms"


@given(
    action=st.sampled_from(grammar.ACTIONS),
    side=st.sampled_from(["", "client:", "server:"]),
    tag=st.sampled_from([*grammar.TAGS, "any"]),
    nth=st.lists(st.integers(1, 50), max_size=3),
    conn=st.none() | st.integers(1, 100),
    delay_ms=st.integers(0, 100_000),
)
def test_format_parse_round_trip(
    action: str, side: str, tag: str, nth: list[int], conn: int | None, delay_ms: int
) -> None:
    text = side + tag
    if nth:
        text += "@" + ",".join(map(str, nth))
    if conn is not None:
        text += f"#{conn}"
    if action == "delay":
        text += f"={delay_ms}ms"
    rule = grammar.parse_cli(action, text)
    assert grammar.parse_cli(action, grammar.format_rule(rule)) == rule
