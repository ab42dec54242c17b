"""Fan-out of the board's messages to the pages and scripts listening
(trio shell).

Each listener has a bounded queue; the board never waits for one.  What
happens to one that cannot keep up (a page on a slow machine, a paused tab,
a burst of thousands of rows a second) depends on its kind:

- a page's queue sheds: the oldest rows go (counted: the page is told how
  many, and shows them as folded, as it does the rows it keeps no longer),
  and tables that a later one replaces; the present — run, sockets, rules,
  the newest rows — always gets through, and the stream is never cut;
- a script's queue of records (``/api/events``) is cut off instead: a script
  that reads every record must not silently miss some; its stream ends.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import trio

LISTENER_BUFFER = 2048
"""Messages a listener may fall behind by before its queue is shed (a page)
or it is cut off (a script)."""

Shed = Callable[[list[Any]], tuple[list[Any], int]]
"""Messages → the ones to keep, and how many rows went."""


class Listener:
    """One listener's queue: :meth:`receive` as a trio channel's."""

    def __init__(self, buffer: int, shed: Shed | None) -> None:
        self.buffer = buffer
        self.shed = shed
        self.skipped = 0
        """Rows shed and not yet told to the listener."""
        self.closed = False
        self._queue: collections.deque[Any] = collections.deque()
        self._arrived = trio.Event()

    def put(self, message: Any) -> bool:
        """Queue ``message``; False if the listener is cut off."""
        if self.closed:
            return False
        if len(self._queue) >= self.buffer:
            if self.shed is not None:
                kept, gone = self.shed(list(self._queue))
                self._queue = collections.deque(kept)
                self.skipped += gone
            if len(self._queue) >= self.buffer:
                self.closed = True
                self._arrived.set()
                return False
        self._queue.append(message)
        self._arrived.set()
        return True

    def close(self) -> None:
        self.closed = True
        self._arrived.set()

    def receive_nowait(self) -> Any:
        if self._queue:
            return self._queue.popleft()
        if self.closed:
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> Any:
        while not self._queue and not self.closed:
            self._arrived = trio.Event()
            await self._arrived.wait()
        return self.receive_nowait()

    def take_skipped(self) -> int:
        skipped, self.skipped = self.skipped, 0
        return skipped


class Hub:
    """Listeners of one kind of message (the page's, or the raw records);
    ``shed`` given: a listener that falls behind sheds, otherwise it is
    cut off."""

    def __init__(self, buffer: int = LISTENER_BUFFER, shed: Shed | None = None) -> None:
        self.buffer = buffer
        self.shed = shed
        self._listeners: set[Listener] = set()
        self.cut_off = 0
        self.shed_rows = 0

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def publish(self, messages: Iterable[Any]) -> None:
        for message in messages:
            for listener in list(self._listeners):
                before = listener.skipped
                if not listener.put(message):
                    self.cut_off += 1
                    self._listeners.discard(listener)
                self.shed_rows += listener.skipped - before

    @contextlib.asynccontextmanager
    async def listen(self, first: Iterable[Any] = ()) -> AsyncIterator[Listener]:
        """A queue that gets ``first`` (a replay), then every message
        published from now on."""
        backlog = list(first)
        listener = Listener(self.buffer + len(backlog), self.shed)
        for message in backlog:
            listener.put(message)
        self._listeners.add(listener)
        try:
            yield listener
        finally:
            self._listeners.discard(listener)
            listener.close()
