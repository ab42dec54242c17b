"""Event lines to the board over a Unix datagram socket, never in the lab's way.

In ``compose.yaml`` the three lab containers print their JSON event lines
on stdout (``docker compose logs``) and also send each one to the board
container, through a socket file on the volume they share
(``/run/tcplab/board.sock``, named by :data:`ENV`).  A file on a volume,
not an address: the lab's own networks carry only the lab's traffic.

One line is one datagram, so the board never reassembles a stream and a
line is either whole or lost.  Sending never blocks and never raises: the
lab runs the same whether the board is up, slow, restarting or absent.  A
line the board cannot take now (no socket file, nobody bound to it, its
queue full) is counted in :attr:`RecordSink.unsent` and dropped; a line over
:data:`MAX_DATAGRAM` is counted in :attr:`RecordSink.oversized` and skipped.
A lost connection is made again lazily, at most once per
:data:`RETRY_S`, so an absent board costs one failed ``connect`` a second.

The receiving side's framing is :func:`split_datagram`.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Callable, Mapping
from types import TracebackType

ENV = "TCPLAB_BOARD_SOCKET"
"""The environment variable naming the board's socket file; unset or empty:
no board, nothing is sent."""
MAX_DATAGRAM = 60 * 1024
"""Longest line sent, in bytes.  Real event lines are a few hundred; the
limit stays under the smallest default socket buffers, so a datagram that is
sent fits in one receive."""
RETRY_S = 1.0
"""Least time between two attempts to connect, in seconds."""

_FULL = frozenset({errno.EAGAIN, errno.EWOULDBLOCK, errno.ENOBUFS})
"""The board is there but its queue is full: drop the line, keep the socket."""


class RecordSink:
    """Sends lines, one per datagram, to the Unix datagram socket at ``path``
    (``None``: disabled, every call does nothing).

    Not thread-safe: one sender (a role's relay loop) owns it.  ``clock``
    gives the monotonic time used to space connection attempts when a call
    does not pass ``now``.
    """

    def __init__(
        self,
        path: str | None,
        *,
        max_datagram: int = MAX_DATAGRAM,
        retry_s: float = RETRY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path or None
        self.max_datagram = max_datagram
        self.retry_s = retry_s
        self.clock = clock
        self.sent = 0
        """Lines the board's socket took."""
        self.unsent = 0
        """Lines dropped because the board was absent or its queue was full."""
        self.oversized = 0
        """Lines skipped because they were longer than ``max_datagram``."""
        self._sock: socket.socket | None = None
        self._last_attempt: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RecordSink:
        """The sink that :data:`ENV` names (disabled when unset or empty)."""
        return cls((os.environ if env is None else env).get(ENV) or None)

    @property
    def enabled(self) -> bool:
        return self.path is not None

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def send(self, line: bytes | str, now: float | None = None) -> bool:
        """Send one line (its trailing newline, if any, is not sent); whether
        the board's socket took it.  Never blocks, never raises."""
        if self.path is None:
            return False
        data = line.encode() if isinstance(line, str) else line
        data = data.rstrip(b"\r\n")
        if len(data) > self.max_datagram:
            self.oversized += 1
            return False
        when = self.clock() if now is None else now
        # a send that finds the connection gone may connect once more at
        # once (the board restarted: its new socket is there), if the
        # spacing of attempts allows
        for _ in range(2):
            sock = self._connection(when)
            if sock is None:
                break
            try:
                sock.send(data, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
            except OSError as exc:
                if exc.errno in _FULL:
                    break
                self._disconnect()  # ECONNREFUSED: the board went away
                continue
            self.sent += 1
            return True
        self.unsent += 1
        return False

    def close(self) -> None:
        self._disconnect()

    def __enter__(self) -> RecordSink:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _connection(self, now: float) -> socket.socket | None:
        """The connected socket, connecting if none and the last attempt is
        at least ``retry_s`` old."""
        if self._sock is not None:
            return self._sock
        if self.path is None:
            return None
        if self._last_attempt is not None and now - self._last_attempt < self.retry_s:
            return None
        self._last_attempt = now
        sock = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
        )
        try:
            sock.connect(self.path)  # ENOENT, ECONNREFUSED: no board yet
        except OSError:
            sock.close()
            return None
        self._sock = sock
        return sock

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def split_datagram(data: bytes) -> list[bytes]:
    """The lines in one received datagram, without their newlines: one line
    with or without a trailing newline, or several; blank lines dropped."""
    lines = (line.rstrip(b"\r") for line in data.split(b"\n"))
    return [line for line in lines if line.strip()]
