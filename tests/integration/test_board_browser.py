"""The board in a real browser (Debian's chromium, driven by Playwright):
the ladder grows while a scenario runs, a fault added from the page's form
drops the next SYN-ACK and the server's kernel sends it again, the 中文
switch changes every label, and no label is clipped or overlaps another.

The screenshots it takes are kept under ``test-output/board/`` so a person
can look at the finished ladder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

OUTPUT = Path(__file__).resolve().parents[2] / "test-output" / "board"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DEADLINE_MS = 60_000

playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")
pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="no chromium (apt install chromium)"
)


@pytest.fixture
def board(tmp_path: Path) -> Iterator[str]:
    """A board that runs catalogue scenarios; its tokenised URL."""
    argv = [sys.executable, "-m", "tcplab.cli", "board", "--listen", "127.0.0.1:0", "--quiet"]
    errors = tmp_path / "board.stderr"
    with (
        errors.open("w") as stderr,
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr, text=True) as proc,
    ):
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + 30
            url = None
            while url is None and time.monotonic() < deadline:
                line = proc.stdout.readline()
                if not line:
                    break
                if "token=" in line:
                    url = line.split("board: ", 1)[1].strip()
            assert url, f"the board printed no URL: {errors.read_text()}"
            yield url
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                pytest.fail("the board did not stop on Ctrl-C")


@pytest.fixture
def page(board: str) -> Iterator[Any]:
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            "",
            executable_path=CHROMIUM,
            headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu"],
            viewport={"width": 1400, "height": 1100},
        )
        context.set_default_timeout(DEADLINE_MS)
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        tab.goto(board)
        yield tab
        context.close()
        assert errors == []


def run_scenario(page: Any, name: str) -> int:
    """Start ``name`` from the page; the rows the page had before."""
    before = page.evaluate("window.tcplab.rows()")
    page.select_option("#scenario", name)
    page.click("#run-form button[type=submit]")
    page.wait_for_function("document.querySelector('#run-status').classList.contains('running')")
    return int(before)


def wait_done(page: Any) -> None:
    page.wait_for_function(
        "['passed', 'failed'].some("
        "c => document.querySelector('#run-status').classList.contains(c))"
    )


def texts_after_last_divider(page: Any, selector: str) -> list[str]:
    return list(
        page.evaluate(
            """sel => {
              const rows = [...document.querySelectorAll('#rows > div')];
              let start = 0;
              rows.forEach((r, i) => { if (r.classList.contains('divider')) start = i; });
              return rows.slice(start).filter(r => r.matches(sel)).map(r => r.textContent);
            }""",
            selector,
        )
    )


OVERLAPS = """() => {
  const bad = [];
  for (const svg of document.querySelectorAll('#rows svg')) {
    const frame = svg.getBoundingClientRect();
    const boxes = [...svg.querySelectorAll('text')].map(
      t => [t.textContent, t.getBoundingClientRect()]);
    for (const [text, b] of boxes) {
      if (b.width === 0) continue;
      if (b.left < frame.left - 0.5 || b.right > frame.right + 0.5) bad.push('clipped: ' + text);
    }
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
      const [ta, a] = boxes[i], [tb, b] = boxes[j];
      if (a.width && b.width && a.left < b.right - 0.5 && b.left < a.right - 0.5
          && a.top < b.bottom - 0.5 && b.top < a.bottom - 0.5) bad.push(ta + ' / ' + tb);
    }
  }
  return bad;
}"""

REAL_GLYPHS = """() => {
  // a CJK character drawn in the page's font stack must not look like a
  // character no font has (the "tofu" box)
  const font = getComputedStyle(document.querySelector('#explain')).fontFamily;
  const draw = ch => {
    const c = document.createElement('canvas'); c.width = 64; c.height = 64;
    const g = c.getContext('2d'); g.font = '40px ' + font; g.fillText(ch, 4, 48);
    return Array.from(g.getImageData(0, 0, 64, 64).data).join(',');
  };
  return draw('客') !== draw('\\u{10FFFD}') && draw('客') !== draw('端');
}"""


def test_the_board_shows_the_run_live_and_a_fault_from_the_form(page: Any) -> None:
    OUTPUT.mkdir(parents=True, exist_ok=True)
    # the ladder grows while the scenario runs (it is paced: 100 ms a segment)
    before = run_scenario(page, "handshake-and-teardown")
    page.wait_for_function(f"window.tcplab.rows() > {before} + 3")
    growing = page.evaluate("window.tcplab.rows()")
    assert "running" in page.get_attribute("#run-status", "class")
    page.wait_for_function(f"window.tcplab.rows() > {growing}")
    wait_done(page)
    assert "passed" in page.get_attribute("#run-status", "class")
    assert page.evaluate(OVERLAPS) == []
    page.screenshot(path=str(OUTPUT / "ladder-en.png"))

    # a fault from the page's form: the next SYN-ACK is dropped
    page.select_option("#rule-action", "drop")
    page.fill("#rule-text", "server:syn-ack@1")
    page.click("#rule-form button[type=submit]")
    page.wait_for_function(
        "document.querySelector('#rules').textContent.includes('drop-server:syn-ack@1')"
    )
    run_scenario(page, "handshake-and-teardown")
    wait_done(page)
    dropped = texts_after_last_divider(page, "[data-style=drop]")
    assert any("SA 0:1" in text for text in dropped), dropped
    notes = texts_after_last_divider(page, "[data-kind=note]")
    assert any("↻" in text and "SYN-ACK" in text for text in notes), notes
    # the SYN_RECV it was sent from: the server's socket is still in it
    assert any("SYN_RECV" in text for text in notes), notes
    page.evaluate("[...document.querySelectorAll('#rows .divider')].pop().scrollIntoView()")
    page.screenshot(path=str(OUTPUT / "ladder-syn-ack-dropped.png"))

    # 中文: every label, not only the explanation
    page.click("#lang-zh")
    assert "客户端" in page.text_content("#ladder-head")
    assert page.text_content("h1") == "tcplab 看板"
    assert "重传" in "".join(texts_after_last_divider(page, "[data-kind=note]"))
    assert "运行" in page.text_content("#run-form")
    assert page.evaluate(REAL_GLYPHS), "Chinese text is drawn as empty boxes"
    assert page.evaluate(OVERLAPS) == []
    page.screenshot(path=str(OUTPUT / "ladder-zh.png"))


def test_a_page_opened_late_replays_what_happened(board: str, page: Any) -> None:
    run_scenario(page, "lost-syn")
    wait_done(page)
    shown = page.evaluate("window.tcplab.rows()")
    late = page.context.new_page()
    late.goto(board)
    late.wait_for_function(f"window.tcplab.rows() === {shown}")
    assert late.text_content("#run-name").startswith("lost-syn")
    late.close()
