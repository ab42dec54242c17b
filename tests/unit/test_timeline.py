"""The ladder diagram from a recorded run (a real one, committed as a fixture)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from tcplab import events, timeline

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "timeline"


def recorded(name: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (FIXTURES / f"{name}.jsonl").read_text().splitlines()]


def test_text_matches_the_recorded_diagram() -> None:
    lines = timeline.render_text(recorded("lost-last-ack"))
    expected = (FIXTURES / "lost-last-ack.txt").read_text().splitlines()
    assert lines == expected


def test_text_fits_100_columns_and_marks_the_drop() -> None:
    lines = timeline.render_text(recorded("lost-last-ack"))
    assert all(len(line) <= 100 for line in lines)
    dropped = [line for line in lines if "✗" in line]
    assert len(dropped) == 1 and "last-ack" in dropped[0] and "drop-last-ack@1" in dropped[0]
    # times count from the first SYN
    first = next(line for line in lines if " syn " in line)
    assert first.lstrip().startswith("+0.0")


def test_live_rows_equal_the_finished_diagram() -> None:
    stream = sorted(recorded("lost-last-ack"), key=lambda e: e["ts"])
    ladder = timeline.Ladder()
    live = ladder.header()
    for event in stream:
        live.extend(ladder.feed(event))
    assert live == timeline.render_text(stream)


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


def test_html_has_one_arrow_per_segment_and_fetches_nothing() -> None:
    stream = recorded("lost-last-ack")
    page = timeline.render_html(stream, title="lost-last-ack", explanation="why TIME_WAIT")
    parser = Counter()
    parser.feed(page)
    segments = [e for e in stream if e.get("event") == events.SEGMENT]
    assert parser.lines == len(segments) > 10
    assert {"svg", "style"} <= parser.tags
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page and "<script" not in page
