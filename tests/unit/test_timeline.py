"""The ladder diagram from recorded runs (real ones, committed as fixtures):
``lost-last-ack`` with the tracepoint source, and the same scenario observed
by polling alone (``--no-trace``)."""

from __future__ import annotations

import dataclasses
import itertools
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import pytest

from core import events
from core.events import Record, Segment, TcpState
from tcplab import causality, causes, timeline
from tcplab.ladder_layout import Row, rows

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


# --- the SVG's geometry -------------------------------------------------------------

ASCENT, DESCENT = 0.9, 0.25
"""Of the font size: a generous box around one line of text."""
STROKE = 1.0
"""Half the width of a drawn line, and then some."""

REALISTIC = [
    Row("note", -0.4, side="client", text="ESTABLISHED → FIN_WAIT1 (1234ms) [t]", style="state"),
    Row("note", 1.2, side="client", text="SYN_SENT → ESTABLISHED (12ms, retrans 2) [p]",
        style="state"),
    Row("note", 1.6, True, side="server", text="SYN_RECV → ESTABLISHED (12ms, retrans 2) [p]",
        style="state"),
    Row("note", 15.5, side="client", text="FIN_WAIT2 → TIME_WAIT (0ms, ⏲60s) [t]", style="state"),
    Row("note", 62013.5, side="client", text="仍在: TIME_WAIT 59.9s 剩余 (+2 个)", style="still"),
    Row("note", 62013.5, side="server", text="仍在: TIME_WAIT 59.9s 剩余 (+2 个)", style="still"),
    Row("note", 1000.0, side="server", text="↻ 重传 (SYN-ACK)", style="kernel"),
    Row("note", 1000.0, side="client", text="⚡ 收到 RST", style="kernel"),
    Row("segment", 1.1, style="drop", direction="s2c", label="SA 0:1 syn-ack",
        note="✗ drop-server:syn-ack@1", second_leg=False, conn="c"),
    Row("segment", 14.3, style="drop", direction="c2s", label="A 8:8 fin-ack,last-ack",
        note="✗ drop-last-ack@1", second_leg=False, conn="c"),
    Row("segment", 214.3, True, style="release", direction="c2s", label="FA 1:1 fin,fin-ack",
        note="▶after 200ms delay-client:fin@1=200ms", first_leg=False, conn="c"),
    Row("segment", 214.3, style="release", direction="s2c", label="PA 1:1 len=6 data",
        note="▶延后 200ms delay-client:fin@1=200ms", first_leg=False, conn="c"),
    Row("segment", 3.0, style="hold", direction="s2c", label="A 8:8 fin-ack,last-ack,retransmit",
        note="⏸held hold-server:ack@1", second_leg=False),
    Row("segment", 3.0, style="pass", direction="c2s", label="A 8:8 fin-ack,last-ack,retransmit",
        note="⧗200ms"),
    Row("segment", 9.0, style="inject", direction="s2c", label="R 7:0", note="RST",
        first_leg=False),
]  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Box:
    what: str
    x0: float
    y0: float
    x1: float
    y1: float
    text: str = ""

    def meets(self, other: Box) -> bool:
        return (
            self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1
        )


def shown(text: ET.Element) -> str:
    """What a <text> shows: its whole text, or after its <title> when cut."""
    title = text.find("title")
    return (title.tail if title is not None else text.text) or ""


def text_box(text: ET.Element, font_px: float = timeline.FONT_PX) -> Box:
    width = timeline.text_width(shown(text), font_px)
    x, y = float(text.get("x", 0)), float(text.get("y", 0))
    x0 = {"start": x, "middle": x - width / 2, "end": x - width}[text.get("text-anchor", "start")]
    return Box(text.get("class", ""), x0, y - ASCENT * font_px, x0 + width, y + DESCENT * font_px,
               shown(text))  # fmt: skip


def row_boxes(row: Row) -> tuple[list[Box], list[Box]]:
    """The texts of one drawn row, and its lines (the arrow and the lifelines)."""
    group = ET.fromstring(timeline.svg_row(row))
    texts = [text_box(t) for t in group.iter("text")]
    lines = [
        Box("lifeline", x - STROKE, 0, x + STROKE, timeline.ROW_H) for x in timeline.LANES.values()
    ]
    for line in group.iter("line"):
        x1, x2, y = float(line.get("x1", 0)), float(line.get("x2", 0)), float(line.get("y1", 0))
        lines.append(Box("arrow", min(x1, x2), y - STROKE, max(x1, x2), y + STROKE))
    return texts, lines


def band_of(box: Box, row: Row) -> str:
    if box.what == "time":
        return "time"
    if box.what.startswith("note"):
        assert row.side is not None
        return row.side
    # a label or a verdict: one of the halves between the lifelines
    return "left" if box.x1 <= timeline.MIDDLEBOX_X else "right"


def drawn_rows() -> list[Row]:
    out = list(REALISTIC)
    for name in RUNS:
        for lang in ("en", "zh"):
            out += rows(recorded(name), lang)
    return out


def test_the_bands_are_apart_inside_the_svg_and_off_the_lifelines() -> None:
    bands = sorted(timeline.BANDS.values())
    assert bands[0][0] >= 0 and bands[-1][1] <= timeline.SVG_WIDTH
    for (_, right), (left, _) in itertools.pairwise(bands):
        assert right < left
    for x in timeline.LANES.values():
        assert not any(lo - STROKE <= x <= hi + STROKE for lo, hi in bands)


@pytest.mark.parametrize("row", drawn_rows(), ids=lambda row: row.text or row.label)
def test_every_text_stays_in_its_band_and_clear_of_the_rest(row: Row) -> None:
    assert "<title>" not in timeline.svg_row(row)  # realistic texts are not cut
    texts, lines = row_boxes(row)
    assert len(texts) == (2 if row.kind == "note" else 2 + bool(row.note))
    for box in texts:
        lo, hi = timeline.BANDS[band_of(box, row)]
        assert lo <= box.x0 and box.x1 <= hi, (box, lo, hi)
        assert box.y0 >= 0 and box.y1 <= timeline.ROW_H, box
        # no two texts share a column range; none touches a line
        for other in texts:
            assert other is box or other.x1 <= box.x0 or box.x1 <= other.x0, (box, other)
        for line in lines:
            assert not box.meets(line), (box, line)
    if row.kind == "segment":
        label = next(b for b in texts if b.what == "label")
        verdict = [b for b in texts if b.what == "verdict"]
        arrow = next(b for b in lines if b.what == "arrow")
        assert label.y1 < timeline.ARROW_Y < min((b.y0 for b in verdict), default=99)
        # the label sits over a drawn leg, the verdict on the other half
        assert arrow.x0 <= label.x0 and label.x1 <= arrow.x1
        assert all(band_of(v, row) != band_of(label, row) for v in verdict)


def test_text_width_counts_wide_characters_as_one_em() -> None:
    assert timeline.text_width("客户端", 13) == pytest.approx(39)
    assert timeline.text_width("abc", 10) == pytest.approx(18)
    assert timeline.text_width("：（", 10) == pytest.approx(20)  # fullwidth
    # the Chinese of a run is measured wider than as many narrow characters
    zh = [r.text for r in rows(recorded("lost-last-ack"), "zh") if r.style in ("still", "kernel")]
    assert len(zh) == 2
    for text in zh:
        assert timeline.text_width(text, 13) > len(text) * 0.6 * 13


def test_fit_cuts_with_an_ellipsis_as_little_as_it_must() -> None:
    assert timeline.fit("A 7:7", 100, 13) == ("A 7:7", False)
    for text in ("x" * 100, "客户端" * 20, "ab客" * 30):
        cut, was_cut = timeline.fit(text, 100, 13)
        assert was_cut and cut.endswith("…") and text.startswith(cut[:-1])
        assert timeline.text_width(cut, 13) <= 100
        assert timeline.text_width(text[: len(cut)] + "…", 13) > 100  # one more would not fit
    assert timeline.fit("abc", 1, 13) == ("", True)


def test_a_cut_label_keeps_its_whole_text_in_a_title() -> None:
    long = "⚡ 发出 RST " + "some-very-long-reason-" * 5
    row = Row("note", 1.0, side="client", text=long, style="kernel")
    group = ET.fromstring(timeline.svg_row(row))
    note = next(t for t in group.iter("text") if "note" in t.get("class", ""))
    title = note.find("title")
    assert title is not None and title.text == long
    box = text_box(note)
    assert shown(note).endswith("…")
    lo, hi = timeline.BANDS["client"]
    assert lo <= box.x0 and box.x1 <= hi


def test_a_row_is_a_group_with_stable_classes_and_escaped_data() -> None:
    row = Row("segment", 1.0, style="drop", direction="c2s", label='R <rst> & "q"',
              note="✗ rule", second_leg=False, conn='a"b<c>')  # fmt: skip
    group = ET.fromstring(timeline.svg_row(row))
    assert group.tag == "g"
    assert set(group.get("class", "").split()) == {"row", "segment", "c2s", "drop"}
    assert group.get("data-kind") == "segment" and group.get("data-conn") == 'a"b<c>'
    classes = {e.get("class") for e in group.iter() if e.get("class")}
    assert {"time", "label", "verdict", "seg c2s drop"} <= classes
    assert next(shown(t) for t in group.iter("text") if t.get("class") == "label") == row.label
    note = ET.fromstring(timeline.svg_row(REALISTIC[0]))
    assert set(note.get("class", "").split()) == {"row", "note", "client", "state"}
    assert note.get("data-kind") == "note" and "data-conn" not in note.attrib


def test_the_lanes_name_the_lifelines_in_the_language() -> None:
    lanes = ET.fromstring(f"<svg>{timeline.svg_lanes(500, 'zh')}</svg>")
    names = {t.text for t in lanes.iter("text") if t.get("class") == "lane-name"}
    assert names == {"客户端", "中间盒", "服务端"}
    lifelines = [line for line in lanes.iter("line") if line.get("class") == "lane"]
    assert sorted(float(line.get("x1", 0)) for line in lifelines) == sorted(timeline.LANES.values())
    assert lanes.find("defs/marker[@id='head']") is not None
    top = min(float(line.get("y1", 0)) for line in lifelines)
    for text in lanes.iter("text"):
        px = timeline.LANE_FONT_PX if text.get("class") == "lane-name" else timeline.FONT_PX
        box = text_box(text, px)
        assert box.x0 >= 0 and box.x1 <= timeline.SVG_WIDTH and box.y0 >= 0 and box.y1 < top


def test_the_page_scales_its_svg_and_names_cjk_fonts() -> None:
    records = recorded("lost-last-ack")
    page = timeline.render_html(records, title="t", lang="zh")
    for font in ("Noto Sans CJK SC", "Source Han Sans SC", "WenQuanYi Micro Hei",
                 "Microsoft YaHei", "Noto Sans Mono CJK SC"):  # fmt: skip
        assert font in page and font in timeline.PAGE_CSS
    svg = ET.fromstring(page[page.index("<svg") : page.index("</svg>") + len("</svg>")])
    drawn = rows(records, "zh")
    height = timeline.svg_height(len(drawn))
    assert svg.get("viewBox") == f"0 0 {timeline.SVG_WIDTH} {height}"
    assert svg.get("width") == "100%" and "height" not in svg.attrib
    assert f"max-width: {timeline.SVG_WIDTH}px" in svg.get("style", "")
    groups = [g for g in svg if g.get("transform", "").startswith("translate(")]
    assert [g.get("transform") for g in groups] == [
        f"translate(0,{timeline.HEADER_H + i * timeline.ROW_H})" for i in range(len(drawn))
    ]
    assert timeline.HEADER_H + len(drawn) * timeline.ROW_H <= height


def test_a_chinese_page_has_the_chinese_title_and_failures() -> None:
    page = timeline.render_html(
        recorded("lost-last-ack"),
        title="lost-last-ack: 最后一个 ACK 丢了：TIME_WAIT 为什么存在",
        failures=["客户端：退出状态应为 0，实际为 1"],
        lang="zh",
    )
    assert "<title>lost-last-ack: 最后一个 ACK 丢了：TIME_WAIT 为什么存在</title>" in page
    assert "<h1>lost-last-ack: 最后一个 ACK 丢了：TIME_WAIT 为什么存在</h1>" in page
    assert "<h2>未满足的预期</h2><ul><li>客户端：退出状态应为 0，实际为 1</li></ul>" in page
