"""The board's live state: records in, messages out to the listeners
(trio shell around :class:`tcplab.board.model.BoardModel`).

Records come either from the board's own runs (already in causal order,
from the runner) or from outside — the compose containers' datagrams, a
hand-made lab's watchers and proxy log — through :meth:`Board.push`, which
holds them for the same short window the runner does so a record from
another process with an earlier time can overtake.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import trio

from core.events import Record, ScenarioStart, to_fields
from tcplab import timeline
from tcplab.board.backends import LIVE_WINDOW_S, Backend
from tcplab.board.hub import Hub
from tcplab.board.model import LANGS, BoardModel, Message, shed
from tcplab.causality import Placed
from tcplab.daemon_io import DueTimer
from tcplab.scenario.check import outcome
from tcplab.transcript import Merger

SOCKETS_EVERY_S = 0.1
"""How often a side's socket table is sent when it changes: a person reads
it a few times a second; a burst changes it thousands of times."""


class Board:
    """One board: its model, its listeners, and what runs the middlebox."""

    def __init__(
        self,
        token: str,
        *,
        lang: str = "en",
        echo: TextIO | None = None,
        kept_rows: int | None = None,
    ) -> None:
        self.token = token
        self.lang = lang
        self.model = BoardModel() if kept_rows is None else BoardModel(kept_rows)
        self.pages = Hub(shed=shed)
        self.records = Hub()
        self.backend: Backend | None = None
        self.echo = echo
        self._ladder = timeline.Ladder(lang=lang)
        self._merger = Merger(LIVE_WINDOW_S)
        self._due = DueTimer(self._merger)
        self.on_message: Callable[[Message], None] | None = None

    # --- what happens ------------------------------------------------------------

    def placed(self, placed: Placed) -> None:
        """One record, in causal order."""
        record = placed.record
        self._publish(self.model.feed(placed))
        if self.records.listeners:
            self.records.publish([to_fields(record)])
        if self.echo is None:
            return
        if isinstance(record, ScenarioStart):
            # compose's client begins the next scenario: a ladder of its own
            lines = self._ladder.flush()
            self._ladder = timeline.Ladder(lang=self.lang)
            title = f": {record.title}" if record.title else ""
            self._print([*lines, "", f"{record.scenario}{title}", "", *self._ladder.header()])
        self._print(self._ladder.feed(placed))

    def push(self, record: Record) -> None:
        """A record from outside, in the order it came."""
        self._merger.push(record)
        self._due.pushed(record)

    async def merge(self) -> None:
        """Hand the pushed records on in causal order, each as soon as its
        window has passed."""
        while True:
            await self._due.wait()
            for placed in self._merger.pop_ready(time.time()):
                self.placed(placed)

    async def tend(self) -> None:
        """Send the socket tables that changed, and the counts of rows and
        connections when they moved, a few times a second."""
        told = -1
        while True:
            await trio.sleep(SOCKETS_EVERY_S)
            messages = self.model.sockets_changed()
            if self.model.rows_total != told:
                told = self.model.rows_total
                messages.append(self.model.summary())
            self._publish(messages)

    def run_started(self, sc: Any) -> None:
        """One of the board's runs begins: the page gets its title and
        explanation in every language, the terminal in the board's."""
        title = {lang: sc.title_in(lang) for lang in LANGS}
        teaches = {lang: sc.teaches_in(lang) for lang in LANGS}
        self._publish(self.model.new_run(sc.name, title, teaches))
        if self.echo is not None:
            self._ladder = timeline.Ladder(lang=self.lang)
            self._print(["", f"{sc.name}: {sc.title_in(self.lang)}", "", *self._ladder.header()])

    def run_finished(self, sc: Any, failures: Mapping[str, list[str]]) -> None:
        """One of the board's runs is over; ``failures`` by language."""
        messages = self.model.run_done(failures)
        self._publish(messages)
        if self.echo is not None:
            said = failures.get(self.lang, failures.get("en", []))
            self._print([*self._ladder.flush(), *outcome(said, (), self.lang)])

    def _publish(self, messages: list[Message]) -> None:
        self.pages.publish(messages)
        if self.on_message is not None:
            for message in messages:
                self.on_message(message)

    def _print(self, lines: list[str]) -> None:
        assert self.echo is not None
        if lines:
            self.echo.write("".join(f"{line}\n" for line in lines))
            self.echo.flush()

    def counters(self) -> dict[str, Any]:
        """The board's own figures."""
        summary = self.model.summary()
        return {
            "pages": self.pages.listeners,
            "event_listeners": self.records.listeners,
            "cut_off": self.pages.cut_off + self.records.cut_off,
            "rows_shed": self.pages.shed_rows,
            "rows": summary["rows_total"],
            "rows_folded": summary["rows_folded"],
            "connections": summary["connections"],
        }
