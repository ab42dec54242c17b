"""The daemons' message framing: a byte stream split into lines (pure).

Both daemons speak in ``\\n``-terminated lines: the client sends each
message as one and checks the echo, the server echoes each complete one.
TCP delivers bytes, not messages, so a read may hold half a line or
several; :class:`LineReader` buffers what it is fed and hands out complete
lines.  A peer sending garbage must not make it buffer without end: a line
over the limit is refused (:class:`MessageTooLong`), and the connection ends
with an ``app_error``.
"""

from __future__ import annotations


class MessageTooLong(Exception):
    """A line, or what is buffered of one, is over the limit (the length is
    the exception's argument)."""


class LineReader:
    """Splits a byte stream into lines, refusing lines over ``limit`` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Take ``data``; every line now complete, each with its ``\\n``."""
        self.buf += data
        lines = []
        while True:
            end = self.buf.find(b"\n")
            if end < 0:
                break
            if end > self.limit:
                raise MessageTooLong(end)
            lines.append(bytes(self.buf[: end + 1]))
            del self.buf[: end + 1]
        if len(self.buf) > self.limit:
            raise MessageTooLong(len(self.buf))
        return lines

    def pop_line(self) -> bytes | None:
        """The next complete line already buffered, or None."""
        end = self.buf.find(b"\n")
        if end < 0:
            if len(self.buf) > self.limit:
                raise MessageTooLong(len(self.buf))
            return None
        if end > self.limit:
            raise MessageTooLong(end)
        line = bytes(self.buf[: end + 1])
        del self.buf[: end + 1]
        return line
