"""Records from several processes merged in causal order: nothing is handed
on before its window has passed, and nothing waits longer than that."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import trio

from core import events
from core.events import Record
from tcplab import causality
from tcplab.board.model import BoardModel
from tcplab.daemon_io import DueTimer
from tcplab.transcript import Merger

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "timeline"


def recorded(name: str = "lost-last-ack") -> list[Record]:
    lines = (FIXTURES / f"{name}.jsonl").read_text().splitlines()
    return [r for r in (events.parse_record(line) for line in lines) if r is not None]


def at(record: Record, ts: float) -> Record:
    return dataclasses.replace(record, ts=ts)


def test_nothing_is_due_before_the_earliest_record_held_plus_the_window() -> None:
    first, second = recorded()[:2]
    merger = Merger(window=0.04)
    assert merger.next_due() is None
    merger.push(at(second, 10.02))
    merger.push(at(first, 10.0))  # came later, happened earlier
    assert merger.next_due() == 10.0 + 0.04
    assert merger.pop_ready(10.039) == []
    ready = merger.pop_ready(10.045)
    assert [p.record.ts for p in ready] == [10.0]
    assert merger.next_due() == 10.02 + 0.04
    assert [p.record.ts for p in merger.drain()] == [10.02]
    assert merger.next_due() is None


async def test_the_timer_wakes_when_the_record_is_due_and_no_later() -> None:
    (record,) = recorded()[:1]
    merger = Merger(window=0.05)
    timer = DueTimer(merger)
    with trio.fail_after(5):
        pushed = at(record, time.time())
        merger.push(pushed)
        timer.pushed(pushed)
        await timer.wait()
        woke = time.time()
    assert woke >= pushed.ts + 0.05
    assert [p.record for p in merger.pop_ready(woke)] == [pushed]


async def test_a_record_due_sooner_wakes_the_timer_early() -> None:
    late, early = recorded()[:2]
    merger = Merger(window=0.05)
    timer = DueTimer(merger)
    far = at(late, time.time() + 60)  # due in a minute
    merger.push(far)

    async def push_sooner() -> None:
        await trio.sleep(0.01)
        sooner = at(early, time.time())
        merger.push(sooner)
        timer.pushed(sooner)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(push_sooner)
            await timer.wait()  # not the minute: the one pushed is due first
    assert merger.next_due() is not None and merger.next_due() < far.ts


def test_socket_tables_are_sent_when_asked_and_only_the_sides_that_changed() -> None:
    model = BoardModel()
    records = recorded()
    out = []
    for placed in causality.order(records):
        out += model.feed(placed)
    assert not any(m["type"] == "sockets" for m in out)  # never one per change
    tables = model.sockets_changed()
    assert {m["side"] for m in tables} == {"client", "server"}
    assert model.sockets_changed() == []  # nothing changed since
