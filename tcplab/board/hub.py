"""Fan-out of the board's messages to the pages and scripts listening
(trio shell).

Each listener has a bounded channel.  One that cannot keep up (a page on a
slow link, a paused tab) is cut off rather than let the board queue for it
without bound: its stream ends, the browser's EventSource reconnects, and the
replay gives it the present.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import trio

LISTENER_BUFFER = 2048
"""Messages a listener may fall behind by before it is cut off."""


class Hub:
    """Listeners of one kind of message (the page's, or the raw records)."""

    def __init__(self, buffer: int = LISTENER_BUFFER) -> None:
        self.buffer = buffer
        self._listeners: set[trio.MemorySendChannel[Any]] = set()
        self.cut_off = 0

    @property
    def listeners(self) -> int:
        return len(self._listeners)

    def publish(self, messages: Iterable[Any]) -> None:
        for message in messages:
            for channel in list(self._listeners):
                try:
                    channel.send_nowait(message)
                except trio.WouldBlock:
                    self.cut_off += 1
                    self._listeners.discard(channel)
                    channel.close()
                except trio.BrokenResourceError:
                    self._listeners.discard(channel)

    @contextlib.asynccontextmanager
    async def listen(
        self, first: Iterable[Any] = ()
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Any]]:
        """A channel that gets ``first`` (a replay), then every message
        published from now on."""
        backlog = list(first)
        send, receive = trio.open_memory_channel[Any](
            max(self.buffer, len(backlog) + self.buffer) if backlog else self.buffer
        )
        for message in backlog:
            send.send_nowait(message)
        self._listeners.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._listeners.discard(send)
            send.close()
