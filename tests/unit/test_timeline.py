"""The ladder diagram from recorded runs (real ones, committed as fixtures):
``lost-last-ack`` with the tracepoint source, and the same scenario observed
by polling alone (``--no-trace``)."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest

from core import events
from core.events import Record, Segment, TcpState
from tcplab import causality, causes, timeline

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "timeline"
RUNS = ("lost-last-ack", "lost-last-ack-polled")


def recorded(name: str) -> list[Record]:
    lines = (FIXTURES / f"{name}.jsonl").read_text().splitlines()
    records = [events.parse_record(line) for line in lines]
    assert all(r is not None for r in records), f"{name}: a line is not a record"
    return [r for r in records if r is not None]


@pytest.mark.parametrize("name", RUNS)
def test_text_matches_the_recorded_diagram(name: str) -> None:
    lines = timeline.render_text(recorded(name))
    expected = (FIXTURES / f"{name}.txt").read_text().splitlines()
    assert lines == expected


@pytest.mark.parametrize("name", RUNS)
def test_text_fits_100_columns_and_marks_the_drop(name: str) -> None:
    lines = timeline.render_text(recorded(name))
    assert all(len(line) <= 100 for line in lines)
    dropped = [line for line in lines if "✗" in line]
    assert len(dropped) == 1 and "last-ack" in dropped[0] and "drop-last-ack@1" in dropped[0]
    # times count from the first SYN
    first = next(line for line in lines if " syn " in line)
    assert first.lstrip().startswith("+0.0")


@pytest.mark.parametrize("name", RUNS)
def test_no_effect_is_drawn_before_its_cause(name: str) -> None:
    records = recorded(name)
    order = {id(p.record): i for i, p in enumerate(causality.order(records))}
    links = causes.links(records)
    assert len(links) > 10
    for link in links:
        assert order[id(link.cause)] < order[id(link.effect)], link.rule


def test_a_polled_state_is_drawn_before_the_segment_it_sent_and_marked() -> None:
    lines = timeline.render_text(recorded("lost-last-ack-polled"))
    fin_wait1 = next(i for i, line in enumerate(lines) if "ESTABLISHED → FIN_WAIT1" in line)
    client_fin = next(i for i, line in enumerate(lines) if "FA 7:7 fin" in line)
    assert fin_wait1 < client_fin
    assert lines[fin_wait1].lstrip().startswith("≤")
    assert "[p]" in lines[fin_wait1]
    # with the tracepoint, the same line is exact: no bound, marked [t]
    traced = timeline.render_text(recorded("lost-last-ack"))
    exact = next(line for line in traced if "ESTABLISHED → FIN_WAIT1" in line)
    assert "≤" not in exact and "[t]" in exact


def test_traced_syn_sent_comes_before_the_syn_with_its_own_time() -> None:
    lines = timeline.render_text(recorded("lost-last-ack"))
    syn_sent = next(i for i, line in enumerate(lines) if "CLOSED → SYN_SENT [t]" in line)
    syn = next(i for i, line in enumerate(lines) if " S 0:0 syn " in line)
    assert syn_sent < syn
    assert lines[syn_sent].lstrip().startswith("-")  # before time zero, the first SYN


def test_a_handover_to_the_timewait_minisock_is_drawn_once() -> None:
    records = recorded("lost-last-ack")
    client = [r for r in records if isinstance(r, TcpState) and r.component == "client"]
    assert any(r.handed_to == "timewait" for r in client)
    lines = timeline.render_text(records)
    assert sum("→ TIME_WAIT" in line for line in lines) == 1
    assert not any("→ CLOSED" in line and "│ FIN_WAIT2" in line for line in lines)


@pytest.mark.parametrize("name", RUNS)
def test_live_rows_equal_the_finished_diagram(name: str) -> None:
    # live, time zero (the first SYN) is not known until it comes
    records = recorded(name)
    ladder = timeline.Ladder()
    live = ladder.header()
    for placed in causality.order(records):
        live.extend(ladder.feed(placed))
    live.extend(ladder.flush())
    assert live == timeline.render_text(records)


def test_chinese_labels() -> None:
    lines = timeline.render_text(recorded("lost-last-ack"), lang="zh")
    assert "客户端" in lines[0] and "中间盒" in lines[0] and "服务端" in lines[0]
    assert "内核跟踪点" in lines[1]
    english = timeline.render_text(recorded("lost-last-ack"))
    assert "客户端" not in "\n".join(english)


class Counter(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.lines = 0
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        if tag == "line" and "seg" in (dict(attrs).get("class") or ""):
            self.lines += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)


def test_html_has_one_arrow_per_segment_row_and_fetches_nothing() -> None:
    records = recorded("lost-last-ack")
    page = timeline.render_html(records, title="lost-last-ack", explanation="why TIME_WAIT")
    parser = Counter()
    parser.feed(page)
    segments = [r for r in records if isinstance(r, Segment)]
    assert parser.lines == len(segments) > 10
    assert {"svg", "style"} <= parser.tags
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and "<script" not in page
    assert "Noto Sans CJK SC" in page  # a CJK font stack with fallbacks
